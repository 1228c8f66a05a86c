"""The scenario model: what a user writes. `load` reads a scenario file (yamlfile.py: hostile YAML
within limits) against the schema (model.py) into the Kubernetes objects of kubevpc.k8s."""
