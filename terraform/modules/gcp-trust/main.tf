locals {
  default_condition = "assertion.sub in [${join(", ", [for s in var.subjects : jsonencode(s)])}]"
  condition         = coalesce(var.attribute_condition, local.default_condition)
}

resource "google_iam_workload_identity_pool" "this" {
  project                   = var.project_id
  workload_identity_pool_id = var.pool_id
  display_name              = var.pool_display_name
  description               = "Tokens issued by fedbroker at ${var.broker_url}"
}

resource "google_iam_workload_identity_pool_provider" "this" {
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.this.workload_identity_pool_id
  workload_identity_pool_provider_id = var.provider_id
  display_name                       = var.provider_display_name
  description                        = "fedbroker at ${var.broker_url}"
  attribute_mapping                  = var.attribute_mapping
  attribute_condition                = local.condition

  oidc {
    issuer_uri        = var.broker_url
    allowed_audiences = var.allowed_audiences
  }
}

resource "google_service_account_iam_member" "workload_identity_user" {
  for_each = var.service_account_email == null ? toset([]) : toset(var.subjects)

  service_account_id = "projects/${google_iam_workload_identity_pool.this.project}/serviceAccounts/${var.service_account_email}"
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.this.name}/subject/${each.value}"
}
