output "audience" {
  description = "The audience the workload requests at the broker and presents to Google STS."
  value       = module.gcp_trust.audience
}

output "principal" {
  description = "The workload's IAM principal in Google Cloud."
  value       = module.gcp_trust.principals[local.subject]
}
