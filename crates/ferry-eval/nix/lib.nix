# ferry's Nix library, passed to deployments as the `ferry` argument.
{ }:
{
  version = "0.1.0";

  # A deployment written as module-system modules, evaluated with nixpkgs' own
  # `lib.evalModules` (see load.nix and modules.nix):
  #   { ferry, ... }: ferry.modules { lib = nixpkgs.lib; modules = [ ./customers.nix ]; }
  # `lib` (or `nixpkgs`, a path) is the user's nixpkgs; `specialArgs` are passed to every
  # module beside `resources` (outputs, as in a plain deployment) and `ferry`.
  modules = { modules, lib ? null, nixpkgs ? null, specialArgs ? { } }:
    { _type = "ferry-modules"; inherit modules specialArgs; }
    // (if lib != null then { inherit lib; } else { })
    // (if nixpkgs != null then { inherit nixpkgs; } else { });

  # The system of a NixOS configuration (`nixosConfigurations.HOST`, a `lib.nixosSystem`
  # result), for `nixos.machine`'s `system` input.
  fromNixosConfiguration = configuration: configuration.config.system.build.toplevel;

  # The providers' libraries, each under its name (`ferry.lib.processes`: the processes model
  # and its generators). ferry-eval knows none of them: `libraries.nix` is written by `NixCli`
  # from the libraries it was given (`NixSettings::libraries`).
  lib = import ./libraries.nix;
}
