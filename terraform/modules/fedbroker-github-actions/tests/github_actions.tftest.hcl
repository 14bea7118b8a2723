# Runs against a real broker with the admin API:
#
#   FEDBROKER_ENDPOINT=http://127.0.0.1:8080 FEDBROKER_ADMIN_TOKEN=... \
#   terraform test -var 'issuer_url=...' -var 'jwks_json=...'
#
# (integration-tests/tests/terraform.rs does this with a fake GitHub issuer.) Static
# keys (jwks_json) keep the broker from fetching anything. `terraform test` destroys
# what it created at the end.

variables {
  broker_audiences      = ["fedbroker-test"]
  danger_allow_insecure = true
  rules = {
    "gha-acme-api-deploys" = {
      repository     = "acme/api"
      audiences      = ["sts.amazonaws.com"]
      issue_audience = "sts.amazonaws.com"
      claims_json = jsonencode({
        "https://aws.amazon.com/tags" = {
          principal_tags      = { repo = ["{claims.repository}"] }
          transitive_tag_keys = ["repo"]
        }
      })
    }
  }
}

run "creates_the_issuer_and_its_rules" {
  command = apply

  assert {
    condition     = fedbroker_issuer.github_actions.kind == "github-actions" && fedbroker_issuer.github_actions.id == "github-actions"
    error_message = "the issuer was not created as a github-actions issuer"
  }

  assert {
    condition     = fedbroker_rule.this["gha-acme-api-deploys"].match.issuer == "github-actions"
    error_message = "the rule does not refer to the issuer"
  }

  assert {
    condition     = fedbroker_rule.this["gha-acme-api-deploys"].match.claims["repository"] == tolist(["acme/api"])
    error_message = "the rule does not pin the repository"
  }

  assert {
    condition     = fedbroker_rule.this["gha-acme-api-deploys"].effect == "allow"
    error_message = "effect should default to allow"
  }

  assert {
    condition     = output.subjects["gha-acme-api-deploys"] == "gha:acme/api"
    error_message = "the subject for the cloud trust is wrong"
  }
}

run "changes_a_rule_in_place" {
  command = apply

  variables {
    rules = {
      "gha-acme-api-deploys" = {
        repository   = "acme/api"
        refs         = ["refs/heads/main", "refs/heads/release"]
        environments = ["prod"]
        audiences    = ["sts.amazonaws.com"]
        lifetime     = "5m"
        credentials_json = jsonencode({
          aws = {
            role_arn     = "arn:aws:iam::111122223333:role/deployer"
            session_name = "gha-{claims.run_id}"
          }
        })
      }
    }
  }

  assert {
    condition     = fedbroker_rule.this["gha-acme-api-deploys"].issue[0].lifetime == "5m"
    error_message = "the lifetime was not changed"
  }

  assert {
    condition     = fedbroker_rule.this["gha-acme-api-deploys"].match.claims["environment"] == tolist(["prod"])
    error_message = "the environment condition was not added"
  }

  assert {
    condition     = jsondecode(fedbroker_rule.this["gha-acme-api-deploys"].issue[0].credentials_json).aws.session_name == "gha-{claims.run_id}"
    error_message = "the credentials block was not added"
  }
}

run "reads_the_brokers_documents" {
  command = apply

  module {
    source = "./tests/discovery"
  }

  assert {
    condition     = can(regex("^https?://", output.issuer))
    error_message = "the discovery document's issuer is not the broker's"
  }

  assert {
    condition     = output.token_endpoint == "${output.issuer}/token"
    error_message = "the token endpoint is not under the issuer"
  }

  assert {
    condition     = length(output.key_ids) > 0
    error_message = "the broker publishes no key"
  }
}
