output "client_id" {
  description = "The application (client) ID: the workload's `client_id` at Entra's token endpoint."
  value       = azuread_application.this.client_id
}

output "tenant_id" {
  description = "The tenant: token endpoint https://login.microsoftonline.com/TENANT/oauth2/v2.0/token."
  value       = data.azuread_client_config.current.tenant_id
}

output "service_principal_object_id" {
  description = "Object ID of the service principal, for Azure role assignments."
  value       = azuread_service_principal.this.object_id
}

output "audience" {
  description = "The `aud` the broker's rules must issue."
  value       = var.audience
}
