# From an empty broker to a GitHub-Actions-to-AWS trust with `terraform apply` alone:
# the broker learns to trust GitHub's OIDC tokens for one repository and to issue
# tokens for AWS STS; AWS learns to trust the broker for exactly that subject.

terraform {
  required_version = ">= 1.6"

  required_providers {
    fedbroker = {
      source = "fedbroker/fedbroker"
    }
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.81"
    }
  }
}

provider "fedbroker" {
  endpoint = var.broker_endpoint
  # token: FEDBROKER_ADMIN_TOKEN in the environment.
}

provider "aws" {
  region = var.aws_region
}

# The broker's issuer URL, as AWS will see it in the `iss` of the tokens.
data "fedbroker_openid_configuration" "broker" {}

locals {
  rule_name = "gha-${replace(var.repository, "/", "-")}-to-aws"
}

module "github_actions" {
  source = "../../modules/fedbroker-github-actions"

  # What the workflow asks GitHub for: `aud` = the broker's URL.
  broker_audiences = [data.fedbroker_openid_configuration.broker.issuer]

  rules = {
    (local.rule_name) = {
      repository     = var.repository
      refs           = var.refs
      audiences      = ["sts.amazonaws.com"]
      issue_audience = "sts.amazonaws.com"
      issue_subject  = "gha:{claims.repository}"
      lifetime       = "15m"
      # Session tags for attribute-based access control in AWS.
      claims_json = jsonencode({
        "https://aws.amazon.com/tags" = {
          principal_tags      = { repo = ["{claims.repository}"] }
          transitive_tag_keys = ["repo"]
        }
      })
    }
  }
}

module "aws_trust" {
  source = "../../modules/aws-trust"

  broker_url  = data.fedbroker_openid_configuration.broker.issuer
  audience    = "sts.amazonaws.com"
  subjects    = [module.github_actions.subjects[local.rule_name]]
  role_name   = "fedbroker-${replace(var.repository, "/", "-")}"
  policy_arns = var.policy_arns
}
