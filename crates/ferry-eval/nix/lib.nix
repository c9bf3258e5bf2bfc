# ferry's Nix library, passed to deployments as the `ferry` argument.
{ }:
{
  version = "0.1.0";
  lib = {
    # The processes model and its generators (processes.set), see processes.nix.
    processes = import ./processes.nix { };
  };
}
