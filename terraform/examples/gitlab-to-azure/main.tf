# GitLab CI jobs of one project, on its default branch, exchanged at fedbroker for a
# token that an Entra ID app registration trusts (federated identity credential).

terraform {
  required_version = ">= 1.6"

  required_providers {
    fedbroker = {
      source = "fedbroker/fedbroker"
    }
    azuread = {
      source  = "hashicorp/azuread"
      version = ">= 3.0"
    }
  }
}

provider "fedbroker" {
  endpoint = var.broker_endpoint
}

provider "azuread" {}

data "fedbroker_openid_configuration" "broker" {}

resource "fedbroker_issuer" "gitlab" {
  name      = "gitlab"
  kind      = "gitlab"
  audiences = [data.fedbroker_openid_configuration.broker.issuer]
}

locals {
  # Entra matches `sub` exactly: one fixed subject per rule.
  subject = "gitlab:${var.project_path}:${var.branch}"
}

resource "fedbroker_rule" "to_azure" {
  name = "gitlab-${replace(var.project_path, "/", "-")}-to-azure"

  match {
    issuer = fedbroker_issuer.gitlab.name
    claims = {
      project_path = [var.project_path]
      ref          = [var.branch]
      ref_type     = ["branch"]
    }
    audiences = [module.azure_trust.audience]
  }

  issue {
    audience = module.azure_trust.audience
    subject  = local.subject
  }
}

module "azure_trust" {
  source = "../../modules/azure-trust"

  broker_url               = data.fedbroker_openid_configuration.broker.issuer
  application_display_name = "fedbroker-${replace(var.project_path, "/", "-")}"
  subjects                 = { "gitlab-${replace(var.project_path, "/", "-")}" = local.subject }
}
