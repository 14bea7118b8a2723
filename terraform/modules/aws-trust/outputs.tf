output "role_arn" {
  description = "ARN of the role: pass it to `aws sts assume-role-with-web-identity --role-arn`."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "Name of the role."
  value       = aws_iam_role.this.name
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider that trusts the broker."
  value       = local.oidc_provider_arn
}

output "audience" {
  description = "The `aud` the broker's rule must issue."
  value       = var.audience
}

output "trust_policy_json" {
  description = "The role's trust policy."
  value       = data.aws_iam_policy_document.trust.json
}
