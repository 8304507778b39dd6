"""Static checks of the deployment files under infra/ and azure.yaml (no Azure, no Bicep CLI)."""
