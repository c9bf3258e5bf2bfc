# ferry's options for deployments written as modules (`ferry.modules`, see load.nix): the
# module system from the user's own nixpkgs checks them, so a typo or a wrong type is an error
# naming the option path (`resources.web.protect`), not a resource silently dropped.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  resource = { name, ... }: {
    options = {
      type = mkOption {
        type = types.str;
        description = "The resource's kind, PROVIDER.KIND (\"local.file\", \"nixos.machine\").";
      };
      inputs = mkOption {
        # Values stay lazy and untyped here: the provider's schema checks them, and they may
        # hold outputs of other resources that are not known yet.
        type = types.attrsOf types.unspecified;
        default = { };
        description = "The resource's inputs (see `ferry providers`).";
      };
      tags = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Tags for --on @TAG.";
      };
      protect = mkOption {
        type = types.bool;
        default = false;
        description = "Refuse to destroy or replace this resource.";
      };
      timeout = mkOption {
        type = types.nullOr (types.either types.int types.float);
        default = null;
        description = "Seconds a provider call on this resource may take.";
      };
      provider = mkOption {
        type = types.nullOr (types.attrsOf types.unspecified);
        default = null;
        description = "An external provider program: { executable = …; args = [ … ]; }.";
      };
    };
  };
in
{
  options = {
    name = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The deployment's name, recorded in its state.";
    };
    resources = mkOption {
      type = types.attrsOf (types.submodule resource);
      default = { };
      description = "The deployment's resources.";
    };
  };
}
