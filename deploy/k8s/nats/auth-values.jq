# Turns `ollamaq auth export --json` into Helm values for the NATS chart:
#   ollamaq auth export --json | jq -f deploy/k8s/nats/auth-values.jq > nats-auth.json
# The operator JWT, the system account and every account JWT for the full
# resolver to start with (resolver_preload); no seeds.
{
  config: {
    merge: {
      operator: .operator,
      system_account: .system_account,
      resolver_preload: (.accounts | map({(.public_key): .jwt}) | add)
    }
  }
}
