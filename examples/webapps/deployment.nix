# ferry's processes example: several `webapp` instances behind a reverse proxy that routes by
# `Host:` header, run by supervisord on this machine, with ports from an ID pool.
#
#   ferry apply -f examples/webapps/deployment.nix --state /tmp/ferry-webapps/state.db --yes
#   curl -H 'Host: webapp.localhost' http://127.0.0.1:8088/     # "webapp on port 23200"
#
# Settings (environment variables, read when ferry evaluates this file):
#   FERRY_WEBAPPS             the instances, separated by spaces (default "webapp"). Each is an
#                             httpd serving "NAME on port PORT", reachable through the proxy as
#                             NAME.localhost. To add one, name it and apply again:
#                               FERRY_WEBAPPS="webapp webapp2" ferry apply -f … --yes
#                             webapp2 gets a port and starts, the proxy gets the new route (it
#                             restarts), webapp keeps its port, its configuration and its PID.
#   FERRY_WEBAPPS_PROXY_PORT  the proxy's port on 127.0.0.1 (default 8088)
#   FERRY_WEBAPPS_PORTS       the instances' port pool, MIN-MAX (default 23200-23299)
#   FERRY_WEBAPPS_DIR         supervisord's state (DIR/state: configs, sockets, logs) and the
#                             set's Nix profile (DIR/profiles/processes-webapps) (default
#                             /tmp/ferry-webapps)
#
# Needs supervisord (Debian `supervisor`). Everything runs as the user running ferry.
{ resources, ferry, ... }:
let
  inherit (builtins) concatStringsSep elem elemAt filter fromJSON getEnv isString listToAttrs map
    match split;

  env = name: default: let v = getEnv name; in if v == "" then default else v;

  # No nixpkgs exists on the machines ferry is developed and tested on: this example uses the
  # busybox package set of ferry's test kit (a static busybox, its applets, and the few
  # nixpkgs builders ferry.lib.processes needs). A real deployment passes nixpkgs instead.
  t = import ../../crates/ferry-testkit/nix { };
  bin = "${t.applets}/bin";
  p = ferry.lib.processes;

  instances = filter (s: isString s && s != "") (split "[[:space:]]+" (env "FERRY_WEBAPPS" "webapp"));
  proxyPort = fromJSON (env "FERRY_WEBAPPS_PROXY_PORT" "8088");
  dir = env "FERRY_WEBAPPS_DIR" "/tmp/ferry-webapps";
  portRange =
    let m = match "([0-9]+)-([0-9]+)" (env "FERRY_WEBAPPS_PORTS" "23200-23299"); in
    if m == null then abort "ferry: FERRY_WEBAPPS_PORTS must be MIN-MAX, e.g. 23200-23299"
    else { min = fromJSON (elemAt m 0); max = fromJSON (elemAt m 1); };

  port = name: resources.ids.ports.${name};
  hostName = name: "${name}.localhost";

  # An empty httpd.conf: without -c, busybox httpd would read /etc/httpd.conf.
  httpdConf = builtins.toFile "httpd.conf" "";

  # One instance: busybox httpd serving a page that names its port.
  webapp = name: p.mkProcess {
    description = "web app ${name}";
    command = [ "${bin}/httpd" "-f" "-c" httpdConf "-p" "127.0.0.1:${toString (port name)}"
                "-h" (t.writeTree "${name}-root" { "index.html" = "${name} on port ${toString (port name)}\n"; }) ];
    readiness.tcpPort = port name;
    requiresUniqueIdsFor = [ "ports" ];
  };

  # The routing table, generated from the instances: "HOST PORT" per line. Adding an instance
  # changes it, hence the proxy's configuration: the switch restarts the proxy, and only it.
  routes = t.pkgs.writeText "webapps-routes"
    (concatStringsSep "" (map (n: "${hostName n} ${toString (port n)}\n") instances));

  # The reverse proxy. A real deployment would run nginx from nixpkgs
  # (`services.nginx.virtualHosts.<host>.locations."/".proxyPass`, or `${pkgs.nginx}/bin/nginx`
  # with a generated nginx.conf); there is no nixpkgs here, and no nginx in the Nix store, so
  # this proxy is busybox httpd running a CGI script: it looks the request's `Host:` header
  # (HTTP_HOST) up in the routing table and fetches the same URL from the instance with busybox
  # wget. busybox httpd hands the CGI (cgi-bin/index.cgi) the directory URLs (`/`, `/a/b/`):
  # other paths answer 404 — nginx would forward every path, method and header.
  proxyRoot = t.pkgs.writeTextFile {
    name = "webapps-proxy-root";
    destination = "/cgi-bin/index.cgi";
    executable = true;
    text = ''
      #!${t.pkgs.runtimeShell}
      # A CGI reverse proxy: routes by Host header (table: ${routes}).
      export PATH=${bin}
      host=$(printf '%s' "''${HTTP_HOST%:*}" | tr 'A-Z' 'a-z')
      port=$(awk -v h="$host" '$1 == h { print $2; exit }' ${routes})
      if [ -z "$port" ]; then
        printf 'HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno web app for host "%s"\n' "$host"
        exit 0
      fi
      page=$(mktemp) && trap 'rm -f "$page"' EXIT
      # (`timeout`, not `wget -T`: the -T of Debian's static busybox 1.35 crashes)
      if err=$(timeout 10 wget -q -O "$page" "http://127.0.0.1:$port$REQUEST_URI" 2>&1); then
        printf 'HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nX-Upstream: 127.0.0.1:%s\r\n\r\n' "$port"
        cat "$page"
      else
        # The instance's error status ("404 Not Found"), or 502 when it did not answer.
        status=$(printf '%s\n' "$err" | sed -n 's/.*server returned error: HTTP\/1\.[01] //p' | head -n 1)
        printf 'HTTP/1.0 %s\r\nContent-Type: text/plain\r\nX-Upstream: 127.0.0.1:%s\r\n\r\n%s: %s\n' \
          "''${status:-502 Bad Gateway}" "$port" "$host" "$err"
      fi
    '';
  };

  proxy = p.mkProcess {
    description = "reverse proxy for ${concatStringsSep ", " (map hostName instances)}";
    command = [ "${bin}/httpd" "-f" "-c" httpdConf "-p" "127.0.0.1:${toString proxyPort}" "-h" proxyRoot ];
    readiness.tcpPort = proxyPort;
    dependsOn = instances;
  };

  processes =
    if elem "proxy" instances then abort "ferry: FERRY_WEBAPPS: `proxy` is the proxy's name, pick another"
    else if instances == [ ] then abort "ferry: FERRY_WEBAPPS names no instance"
    else listToAttrs (map (n: { name = n; value = webapp n; }) instances) // { inherit proxy; };
in
{
  # Sticky ports: an instance keeps its port as long as it exists.
  resources.ids = {
    type = "ids.pool";
    inputs = {
      pools.ports = portRange;
      claimants = p.claimants processes;   # { webapp = [ "ports" ]; … } (the proxy claims none)
    };
  };

  resources.webapps = {
    type = "processes.set";
    inputs = p.set {
      pkgs = t.pkgs;
      manager = "supervisord";
      name = "webapps";
      inherit processes;
      stateDir = "${dir}/state";
      profilePath = "${dir}/profiles/processes-webapps";
    };
  };
}
