# A Kubernetes service account's projected token, exchanged at fedbroker for a token
# that Google Cloud's Workload Identity Federation trusts.

terraform {
  required_version = ">= 1.6"

  required_providers {
    fedbroker = {
      source = "fedbroker/fedbroker"
    }
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

provider "fedbroker" {
  endpoint = var.broker_endpoint
}

provider "google" {
  project = var.project_id
}

data "fedbroker_openid_configuration" "broker" {}

resource "fedbroker_issuer" "cluster" {
  name      = "prod-cluster"
  kind      = "kubernetes"
  issuer    = var.cluster_issuer_url
  audiences = [data.fedbroker_openid_configuration.broker.issuer]
}

locals {
  # What Google sees as google.subject.
  subject = "k8s:${var.namespace}/${var.service_account}"
}

module "gcp_trust" {
  source = "../../modules/gcp-trust"

  broker_url            = data.fedbroker_openid_configuration.broker.issuer
  subjects              = [local.subject]
  service_account_email = var.gcp_service_account_email
}

resource "fedbroker_rule" "to_gcp" {
  name = "k8s-${var.namespace}-${var.service_account}-to-gcp"

  match {
    issuer    = fedbroker_issuer.cluster.name
    subject   = "system:serviceaccount:${var.namespace}:${var.service_account}"
    audiences = [module.gcp_trust.audience]
  }

  issue {
    audience = module.gcp_trust.audience
    subject  = local.subject
    lifetime = "10m"
  }
}
