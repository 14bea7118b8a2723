# Helper for the module's tests: the broker's public documents.
terraform {
  required_providers {
    fedbroker = {
      source = "fedbroker/fedbroker"
    }
  }
}

data "fedbroker_openid_configuration" "this" {}

data "fedbroker_jwks" "this" {}

output "issuer" {
  value = data.fedbroker_openid_configuration.this.issuer
}

output "token_endpoint" {
  value = data.fedbroker_openid_configuration.this.token_endpoint
}

output "key_ids" {
  value = data.fedbroker_jwks.this.key_ids
}
