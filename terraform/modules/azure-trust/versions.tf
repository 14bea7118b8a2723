terraform {
  required_version = ">= 1.6"

  required_providers {
    azuread = {
      source = "hashicorp/azuread"
      # 3.0 names the owning application `application_id` (its resource ID).
      version = ">= 3.0"
    }
  }
}
