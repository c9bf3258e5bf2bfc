# Test package set for ferry's `nixos.machine` tests. No nixpkgs exists on the test machines:
# everything here is built with the machine's static busybox (Debian `busybox-static`), and
# builds in well under a second.
#
#   let t = import ./crates/ferry-testkit/nix { };
#   in t.mkSystem { name = "web"; address = "127.0.0.10"; pages."index.html" = "v1"; }
#
# Attributes:
#   busybox    the static busybox, as …-busybox/bin/busybox (it picks its applet from argv[0])
#   applets    …-busybox-applets/bin/APPLET links (an allowlist: nothing that acts on the machine)
#   mkSystem   a test "NixOS system" (below)
#   mkContainer  a test NixOS container system for `nspawn.container` (below)
#   mkBlob     { name, sizeKiB, seed ? name }: a store path (a file) of sizeKiB KiB of
#              deterministic, incompressible pseudo-random bytes; ~1 s per 100 MiB
#   mkService, writeTree, runSh   the builders mkSystem uses
#   pkgs       a nixpkgs-compatible subset (runtimeShell, writeTextFile, writeText, writeScript,
#              runCommand, coreutils) for code written against nixpkgs, e.g. ferry.lib.processes
#
# mkSystem returns a derivation with the interface of a NixOS toplevel: bin/switch-to-configuration,
# activate, init, etc/ (its files), sw/bin/ (applets, a simulated `reboot`, refusing
# `poweroff`/`halt`/`shutdown`), nixos-version ("ferry-test-NAME"), services/NAME (one store
# path per service), extra-paths. It is meant for test hosts (`ferry_testkit::host::TestHost`:
# private /nix, /run, /boot, /etc; sshd config in /run/ferry-testhost) and is switched there as
# root exactly like NixOS. What each goal does: switch-to-configuration.sh; /etc and sshd:
# activate.sh; the reboot: reboot.sh. Runtime state: /run/ferry-test/{services/NAME,NAME.pid,
# NAME.log,healthy}; the boot default: /boot/default-system.
{ }:
let
  inherit (builtins) attrNames concatStringsSep currentSystem genList length listToAttrs mapAttrs
    replaceStrings substring hashString elemAt;

  # Busybox picks its applet from argv[0], so it is imported inside a folder: …-busybox/bin/busybox.
  busybox = builtins.path {
    name = "busybox";
    path = /usr;
    filter = p: _type: p == "/usr/bin" || p == "/usr/bin/busybox";
  };
  bb = "${busybox}/bin/busybox";

  quote = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # The applets on PATH in builders, in the systems' scripts and in a system's sw/bin. An
  # allowlist: applets that act on the real machine (reboot, poweroff, halt, init, mount, …) are
  # left out; sw/bin gets a simulated `reboot` instead.
  appletNames = [
    "[" "ash" "awk" "base64" "basename" "cat" "chgrp" "chmod" "chown" "cmp" "cp" "cut" "date" "dd"
    "df" "diff" "dirname" "du" "echo" "egrep" "env" "expr" "false" "fgrep" "find" "grep" "gunzip"
    "gzip" "head" "hexdump" "hostname" "httpd" "id" "kill" "killall" "less" "ln" "ls" "md5sum"
    "mkdir" "mkfifo" "mktemp" "mv" "nc" "nl" "nproc" "od" "paste" "pidof" "printf" "ps" "pwd"
    "readlink" "realpath" "rev" "rm" "rmdir" "sed" "seq" "setsid" "sh" "sha1sum" "sha256sum"
    "sha512sum" "sleep" "sort" "stat" "strings" "tail" "tar" "tee" "test" "timeout" "touch" "tr"
    "true" "truncate" "uname" "uniq" "uptime" "usleep" "wc" "wget" "which" "whoami" "xargs" "xxd"
    "xz" "yes" "zcat"
  ];

  applets = derivation {
    name = "busybox-applets";
    system = currentSystem;
    builder = bb;
    args = [ "sh" "-c" ''
      ${bb} mkdir -p $out/bin
      for a in ${concatStringsSep " " (map quote appletNames)}; do ${bb} ln -s ${bb} "$out/bin/$a"; done
    '' ];
  };

  # A derivation built by `busybox sh -c script` with the applets on PATH; `env` adds variables.
  runSh = name: env: script: derivation ({
    inherit name;
    system = currentSystem;
    builder = bb;
    args = [ "sh" "-c" script ];
    PATH = "${applets}/bin";
  } // env);

  # A directory of text files: { "relative/path" = "content"; } (contents passed as variables).
  writeTree = name: files:
    let
      names = attrNames files;
      var = i: "file${toString i}";
    in
    runSh name (listToAttrs (genList (i: { name = var i; value = files.${elemAt names i}; }) (length names))) (''
      set -e
      mkdir -p $out
    '' + concatStringsSep "" (genList (i: ''
      mkdir -p "$(dirname "$out/"${quote (elemAt names i)})"
      printf '%s' "''$${var i}" > "$out/"${quote (elemAt names i)}
    '') (length names)));

  # A service: `run` (foreground command, started detached by switch-to-configuration) and
  # optionally `listen` ("ADDRESS PORT": the start waits until the port listens).
  mkService = name: { run, listen ? "" }: runSh "service-${name}" { inherit run listen; } ''
    set -e
    mkdir $out
    { printf '#!%s sh\nPATH=%s\n' ${bb} ${applets}/bin; printf '%s\n' "$run"; } > $out/run
    chmod +x $out/run
    if [ -n "$listen" ]; then printf '%s\n' "$listen" > $out/listen; fi
  '';

  # Pseudo-random data for benchmarks (see blob.sh); `seed` picks the bytes.
  mkBlob = { name, sizeKiB, seed ? name }: runSh name {
    inherit sizeKiB;
    seedHex = substring 0 7 (hashString "sha256" seed);
  } ". ${./blob.sh}";

  # A test system.
  #   name            its name (nixos-version "ferry-test-NAME", default page)
  #   address         where its web server listens (the test host's 127.0.0.N)
  #   httpPort        the web server's port
  #   pages           the web server's files: { "index.html" = "…"; "sub/x.txt" = "…"; }; a
  #                   healthy system adds `health` ("ok": GET /health answers 200)
  #   etc             files of /etc: { "relative/path" = "content"; }
  #   services        more services: { NAME = "shell command running in the foreground"; }
  #   failActivation  switch/test exit 1 after activating (like a unit failing)
  #   killSshd        activation kills sshd's listener and never restarts it: the host is
  #                   unreachable over SSH until a good system is activated (e.g. a rollback)
  #   unhealthy       no /health page and no /run/ferry-test/healthy
  #   activationHook  shell code run (by busybox sh, as root) when switch/test starts, before
  #                   anything is activated; if it fails, the activation fails and nothing
  #                   changes (e.g. block on a fifo, or fail while a flag file exists)
  #   extraPaths      store paths added to the closure (listed in $out/extra-paths), e.g. blobs
  mkSystem =
    { name
    , address
    , httpPort ? 8080
    , pages ? { "index.html" = "<h1>${name}</h1>\n"; }
    , etc ? { }
    , services ? { }
    , failActivation ? false
    , killSshd ? false
    , unhealthy ? false
    , extraPaths ? [ ]
    , activationHook ? ""
    , initScript ? ./init.sh
    }:
    let
      docroot = writeTree "${name}-docroot" (pages // (if unhealthy then { } else { health = "ok\n"; }));
      httpdConf = builtins.toFile "httpd.conf" "";
      allServices = {
        httpd = mkService "httpd" {
          run = "exec httpd -f -vv -c ${httpdConf} -p ${address}:${toString httpPort} -h ${docroot}";
          listen = "${address} ${toString httpPort}";
        };
      } // mapAttrs (n: run: mkService n { inherit run; }) services;
      etcTree = writeTree "${name}-etc" etc;
      flag = b: if b then "1" else "";
    in
    runSh "nixos-system-${name}"
      {
        failActivation = flag failActivation;
        killSshd = flag killSshd;
        unhealthy = flag unhealthy;
        extraPaths = concatStringsSep "\n" (map toString extraPaths);
        inherit activationHook;
        version = "ferry-test-${name}";
      }
      ''
        set -e
        mkdir -p $out/bin $out/sw/bin $out/services
        # install_script SOURCE DEST: the header (interpreter, PATH, this system's settings), the
        # shared helpers, then the script.
        install_script() {
          { printf '#!%s sh\nPATH=%s\nout=%s\n' ${bb} ${applets}/bin "$out"
            printf 'failActivation=%s\nkillSshd=%s\nunhealthy=%s\n' "$failActivation" "$killSshd" "$unhealthy"
            cat ${./lib.sh} "$1"
          } > "$2"
          chmod +x "$2"
        }
        ln -s ${etcTree} $out/etc
        printf '%s\n' "$version" > $out/nixos-version
        for a in ${applets}/bin/*; do ln -s "$a" "$out/sw/bin/''${a##*/}"; done
        install_script ${./switch-to-configuration.sh} $out/bin/switch-to-configuration
        install_script ${./activate.sh} $out/activate
        install_script ${initScript} $out/init
        install_script ${./reboot.sh} $out/sw/bin/reboot
        for a in poweroff halt shutdown; do
          printf '#!%s sh\necho "%s: refused on a test host (use reboot: it is simulated)" >&2\nexit 1\n' ${bb} $a > $out/sw/bin/$a
          chmod +x $out/sw/bin/$a
        done
        ${concatStringsSep "\n" (map (n: "ln -s ${allServices.${n}} $out/services/${quote n}") (attrNames allServices))}
        if [ -n "$extraPaths" ]; then printf '%s\n' "$extraPaths" > $out/extra-paths; fi
        if [ -n "$activationHook" ]; then
          { printf '#!%s sh\nPATH=%s\n' ${bb} ${applets}/bin; printf '%s\n' "$activationHook"; } > $out/activation-hook
          chmod +x $out/activation-hook
        fi
      '';
  # A test container system: mkSystem's interface (same arguments) with a container `init` for
  # systemd-nspawn (container-init.sh: activate, start the services, then wait as PID 1 until
  # SIGRTMIN+3 or SIGTERM stops them). Its web server listens on every address of the container
  # (the address comes from ferry at run time), port 80 unless `httpPort` says otherwise.
  mkContainer = args: mkSystem ({ address = "0.0.0.0"; httpPort = 80; } // args // {
    initScript = ./container-init.sh;
  });

  # A nixpkgs-compatible subset for ferry.lib.processes (and other code written against
  # nixpkgs): runtimeShell, writeTextFile, writeText, writeScript, runCommand, coreutils.
  pkgs = rec {
    runtimeShell = "${applets}/bin/sh";
    coreutils = applets;
    runCommand = name: env: script: runSh name (removeAttrs env [ "passAsFile" ]) ''
      set -e
      ${script}
    '';
    writeTextFile = { name, text, executable ? false, destination ? "" }:
      runSh name { inherit text destination; exec = if executable then "1" else ""; } ''
        set -e
        target="$out$destination"
        mkdir -p "$(dirname "$target")"
        printf '%s' "$text" > "$target"
        if [ -n "$exec" ]; then chmod +x "$target"; fi
      '';
    writeText = name: text: writeTextFile { inherit name text; };
    writeScript = name: text: writeTextFile { inherit name text; executable = true; };
  };
in
{
  inherit pkgs;
  inherit busybox applets mkSystem mkContainer mkBlob mkService writeTree runSh;
}
