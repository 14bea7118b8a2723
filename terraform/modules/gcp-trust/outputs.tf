output "audience" {
  description = "The `aud` the broker's rule must issue (issue.audience and match.audiences) unless allowed_audiences is set: the provider's full resource name."
  value       = "//iam.googleapis.com/${google_iam_workload_identity_pool_provider.this.name}"
}

output "pool_name" {
  description = "Full name of the pool (projects/NUMBER/locations/global/workloadIdentityPools/ID)."
  value       = google_iam_workload_identity_pool.this.name
}

output "provider_name" {
  description = "Full name of the provider."
  value       = google_iam_workload_identity_pool_provider.this.name
}

output "principals" {
  description = "IAM principal of each subject, for role bindings on resources."
  value       = { for s in var.subjects : s => "principal://iam.googleapis.com/${google_iam_workload_identity_pool.this.name}/subject/${s}" }
}

output "attribute_condition" {
  description = "The condition the provider applies."
  value       = local.condition
}
