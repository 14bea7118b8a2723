terraform {
  required_version = ">= 1.6"

  required_providers {
    fedbroker = {
      source  = "fedbroker/fedbroker"
      version = ">= 0.1.0"
    }
  }
}
