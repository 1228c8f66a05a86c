"""Importers: a cloud description written for another tool becomes a kubevpc scenario.

`terraform.import_terraform` reads the JSON of `terraform show -json` (a plan or a state) of an
Alibaba Cloud configuration and gives the scenario's `cloud:` and `cluster:` sections, with what it
could not map and what it had to invent. docs/scenario.md ("Importing Terraform") says what maps to
what.
"""
