locals {
  # IAM condition keys name the provider by its URL without the scheme:
  # "broker.example.com/sts:sub".
  issuer_host_path  = trimsuffix(trimprefix(var.broker_url, "https://"), "/")
  oidc_provider_arn = var.create_oidc_provider ? aws_iam_openid_connect_provider.broker[0].arn : var.oidc_provider_arn
}

resource "aws_iam_openid_connect_provider" "broker" {
  count = var.create_oidc_provider ? 1 : 0

  url             = var.broker_url
  client_id_list  = [var.audience]
  thumbprint_list = var.thumbprint_list
  tags            = var.tags
}

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "FedbrokerWebIdentity"
    effect  = "Allow"
    actions = var.allow_session_tags ? ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"] : ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }

    # Both pinned: the token must be meant for AWS STS and come from one of the
    # subjects the broker's rules issue.
    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host_path}:aud"
      values   = [var.audience]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host_path}:sub"
      values   = var.subjects
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.role_name
  description          = var.role_description
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = var.max_session_duration
  tags                 = var.tags

  lifecycle {
    precondition {
      condition     = var.create_oidc_provider || var.oidc_provider_arn != null
      error_message = "With create_oidc_provider = false, pass oidc_provider_arn."
    }
  }
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = toset(var.policy_arns)

  role       = aws_iam_role.this.name
  policy_arn = each.value
}
