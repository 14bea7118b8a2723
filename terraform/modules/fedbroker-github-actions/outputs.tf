output "issuer_name" {
  description = "Name of the fedbroker issuer."
  value       = fedbroker_issuer.github_actions.name
}

output "rule_names" {
  description = "Names of the rules."
  value       = [for r in fedbroker_rule.this : r.name]
}

output "subjects" {
  description = "Rule name => the `sub` its issued tokens carry, for the cloud trust (templates rendered for the rule's repository)."
  value = {
    for name, r in var.rules : name => replace(r.issue_subject, "{claims.repository}", r.repository)
  }
}
