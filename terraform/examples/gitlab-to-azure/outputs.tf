output "client_id" {
  description = "The app registration's client ID: client_id at Entra's token endpoint, with the broker's token as client_assertion."
  value       = module.azure_trust.client_id
}

output "tenant_id" {
  description = "The Entra tenant."
  value       = module.azure_trust.tenant_id
}
