# The generated closure of bench/machines.sh and bench/copy-transports.sh.
#
#   nix-build bench/machines.nix -A blobs                                   # the shared blobs
#   nix-build bench/machines.nix -A systems --arg hostsJson ./hosts.json    # one system per host
#
# `blobs` 1 MiB blobs of pseudo-random (incompressible) bytes, identical for every host, are the
# bulk of each system's closure (extraPaths); each host's system (mkSystem of the test package
# set, its web server on the host's address) differs only by its name and page. With the
# defaults a system's closure is 107 paths, ~102 MiB. `hostsJson` is the file that
# `ferry-testhosts up` writes.
{ hostsJson ? null, blobs ? 100, blobKiB ? 1024 }:
let
  t = import ../crates/ferry-testkit/nix { };
  extraPaths = builtins.genList (i: t.mkBlob { name = "bench-blob-${toString i}"; sizeKiB = blobKiB; }) blobs;
  hosts = if hostsJson == null then [ ] else builtins.fromJSON (builtins.readFile hostsJson);
  system = h: t.mkSystem {
    inherit (h) name;
    address = h.addr;
    pages."index.html" = "<h1>${h.name}</h1>\n";
    inherit extraPaths;
  };
in
{
  blobs = extraPaths;
  systems = builtins.listToAttrs (map (h: { inherit (h) name; value = system h; }) hosts);
}
