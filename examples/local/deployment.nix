# ferry's built-in example: local resources only, values flowing between them.
#
#   ferry plan  -f examples/local/deployment.nix
#   ferry apply -f examples/local/deployment.nix --yes
#
# Everything is written under $FERRY_EXAMPLE_DIR (default /tmp/ferry-example).
{ resources, ferry, ... }:
let
  dir = let d = builtins.getEnv "FERRY_EXAMPLE_DIR"; in if d == "" then "/tmp/ferry-example" else d;
in
{
  imports = [ ./site.nix ];

  # An SSH key pair; its private half is sensitive and never printed.
  resources.deploy-key = {
    type = "local.ssh-keypair";
    inputs.comment = "ferry-example";
  };

  # A stable random token, regenerated only when its keepers change.
  resources.token = {
    type = "local.random";
    inputs = { length = 24; keepers.epoch = "1"; };
  };

  # The public key flows into a file.
  resources.authorized-keys = {
    type = "local.file";
    inputs = {
      path = "${dir}/authorized_keys";
      content = resources.deploy-key.publicKey + "\n";
      mode = "0600";
    };
    tags = [ "ssh" ];
  };

  # A command whose JSON output becomes outputs: here it records the host name.
  resources.host-info = {
    type = "local.exec";
    inputs = {
      create = [ "sh" "-c" "printf '{\"hostname\": \"%s\"}' \"$(cat /proc/sys/kernel/hostname)\"" ];
      outputNames = [ "hostname" ];
    };
  };
}
