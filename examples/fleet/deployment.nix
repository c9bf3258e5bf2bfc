# ferry's machines example: three NixOS-style machines over SSH, deployed in parallel.
#
# The machines are local test hosts (private mount namespaces running a real sshd on
# 127.0.0.N, see crates/ferry-testkit) and the systems are tiny busybox systems with the NixOS
# toplevel interface; with real NixOS machines, `system` is
# `(nixpkgs.lib.nixosSystem { modules = [ ./web.nix ]; }).config.system.build.toplevel`.
#
#   ferry-testhosts up --dir /tmp/ferry-fleet web1 web2 web3     # writes hosts.json
#   FERRY_FLEET_HOSTS=/tmp/ferry-fleet/hosts.json ferry apply -f examples/fleet/deployment.nix
{ resources, ... }:
let
  testpkgs = import ../../crates/ferry-testkit/nix { };
  hostsFile = builtins.getEnv "FERRY_FLEET_HOSTS";
  hosts =
    if hostsFile == "" then abort "ferry: set FERRY_FLEET_HOSTS to the hosts.json written by `ferry-testhosts up`"
    else builtins.fromJSON (builtins.readFile hostsFile);

  machine = h: {
    type = "nixos.machine";
    tags = [ "web" ];
    inputs = {
      host = h.addr;
      port = h.port;
      # The host key ferry checks; without it, the first connection's key is trusted and recorded.
      hostKey = h.hostKey;
      # The key ferry logs in with (a path on the deployer, or key material).
      sshKey = h.clientKey;
      system = testpkgs.mkSystem {
        name = h.name;
        address = h.addr;
        pages."index.html" = ''
          <h1>${h.name}</h1>
          <p>Deployed by ferry. This machine trusts the fleet key ${resources.fleet-key.publicKey}</p>
        '';
        # The generated public key flows into the system: the machines wait for the key pair.
        etc."ssh/authorized_keys.d/root" = resources.fleet-key.publicKey + "\n";
      };
      # Uploaded over SSH, never through the (world-readable) Nix store.
      keys.fleet-key = {
        text = resources.fleet-key.privateKey;
        user = "nobody";
        group = "nogroup";
        permissions = "0400";
      };
      healthChecks = [
        { http = "http://${h.addr}:8080/health"; }
        { command = [ "test" "-s" "/run/keys/fleet-key" ]; }
      ];
      rollback.magic.confirmTimeout = 10;
    };
  };
in
{
  resources = {
    # A key pair generated once and kept in ferry's state (its private half is sensitive).
    fleet-key = {
      type = "local.ssh-keypair";
      inputs.comment = "ferry-fleet";
    };
  } // builtins.listToAttrs (map (h: { name = h.name; value = machine h; }) hosts);
}
