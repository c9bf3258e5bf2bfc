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

  # The secret token goes into a 0600 file; plans show (sensitive) for it.
  resources.token-file = {
    type = "local.file";
    inputs = {
      path = "${dir}/secrets/token";
      content = resources.token.value;
      mode = "0600";
    };
  };
}
