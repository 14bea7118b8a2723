data "azuread_client_config" "current" {}

resource "azuread_application" "this" {
  display_name = var.application_display_name
  owners       = length(var.owners) > 0 ? var.owners : [data.azuread_client_config.current.object_id]
}

resource "azuread_service_principal" "this" {
  client_id = azuread_application.this.client_id
  owners    = length(var.owners) > 0 ? var.owners : [data.azuread_client_config.current.object_id]
}

resource "azuread_application_federated_identity_credential" "subject" {
  for_each = var.subjects

  application_id = azuread_application.this.id
  display_name   = each.key
  description    = "fedbroker subject ${each.value}"
  audiences      = [var.audience]
  issuer         = var.broker_url
  subject        = each.value
}
