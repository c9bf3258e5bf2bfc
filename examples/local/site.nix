# Imported by deployment.nix: a small "site" built from other resources' outputs.
{ resources, ... }:
let
  dir = let d = builtins.getEnv "FERRY_EXAMPLE_DIR"; in if d == "" then "/tmp/ferry-example" else d;
in
{
  resources.index = {
    type = "local.file";
    inputs = {
      path = "${dir}/www/index.html";
      content = ''
        <h1>Deployed by ferry on ${resources.host-info.hostname}</h1>
        <p>authorized_keys checksum: ${resources.authorized-keys.sha256}</p>
      '';
    };
    tags = [ "web" ];
  };

  # A token file, and the private key in a 0600 file: the key is a sensitive output, so
  # plans and logs show (sensitive) wherever its value appears.
  resources.token-file = {
    type = "local.file";
    inputs = {
      path = "${dir}/secrets/token";
      content = resources.token.value;
      mode = "0600";
    };
  };
  resources.private-key = {
    type = "local.file";
    inputs = {
      path = "${dir}/secrets/id_ed25519";
      content = resources.deploy-key.privateKey;
      mode = "0600";
    };
  };
}
