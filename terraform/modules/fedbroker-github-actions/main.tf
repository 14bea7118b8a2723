resource "fedbroker_issuer" "github_actions" {
  name                  = var.issuer_name
  kind                  = "github-actions"
  issuer                = var.issuer_url
  audiences             = var.broker_audiences
  jwks_json             = var.jwks_json
  algorithms            = ["RS256"]
  danger_allow_insecure = var.danger_allow_insecure
}

resource "fedbroker_rule" "this" {
  for_each = var.rules

  name        = each.key
  description = "GitHub Actions workflows of ${each.value.repository}"

  match {
    # A reference, not a literal: Terraform then creates the issuer first and
    # deletes it last.
    issuer = fedbroker_issuer.github_actions.name
    claims = merge(
      {
        repository = [each.value.repository]
        ref        = each.value.refs
      },
      each.value.environments == null ? {} : { environment = each.value.environments },
    )
    audiences = each.value.audiences
  }

  issue {
    audience         = each.value.issue_audience
    subject          = each.value.issue_subject
    lifetime         = each.value.lifetime
    claims_json      = each.value.claims_json
    credentials_json = each.value.credentials_json
  }
}
