terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.81 made thumbprint_list optional on aws_iam_openid_connect_provider.
      version = ">= 5.81"
    }
  }
}
