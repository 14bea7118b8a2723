output "broker_url" {
  description = "The broker: where the workflow exchanges its GitHub token."
  value       = data.fedbroker_openid_configuration.broker.issuer
}

output "token_endpoint" {
  description = "The broker's RFC 8693 token endpoint."
  value       = data.fedbroker_openid_configuration.broker.token_endpoint
}

output "role_arn" {
  description = "The role the workflow assumes with the broker's token."
  value       = module.aws_trust.role_arn
}
