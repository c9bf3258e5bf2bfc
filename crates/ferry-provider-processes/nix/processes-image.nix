# ferry.lib.processes.image: a multi-process OCI image (docker-archive tar, `podman load -i`)
# of a processes model, with the process manager's boot script as its entry point — the
# nix-processmgmt `createMultiProcessImage` idea. See docs/images.md.
#
#   img = ferry.lib.processes.image {
#     inherit pkgs; manager = "sysvinit"; name = "web"; tag = "v1";
#     processes.webapp = p.mkProcess { command = [ "${webapp}/bin/webapp" ]; };
#     mutable = true; exposedPorts = [ 8080 ];
#   };
#   resources.webImage = { type = "processes.image"; inputs = img.inputs; };
#
# The image holds the closure of the set's profile (ferry.lib.processes.set with the same
# arguments) and an entry point that, as PID 1, brings the set up exactly in the layout the
# `processes.set` provider keeps on a host (crates/ferry-provider-processes/src/manager.rs):
# STATE/.ferry/active/NAME -> config, STATE/init.d/NAME -> config/init.d, pid files in the
# runtime directory, and (mutable) the profile at `profilePath` with generation 1 as a
# `…-1-link` chain like nix-env makes. It starts the processes level by level (each level
# running and ready before the next), reaps orphans, and on SIGTERM/SIGINT stops them in
# reverse order and exits.
#
#   mutable = true   the entry point boots the profile's *current* generation (generation 1,
#                    the image's set, on the first boot): a container whose processes ferry
#                    switched in place (processes.set with host.podman) keeps the switched
#                    generation across `podman restart`. Needs a writable /nix/var and stateDir.
#   mutable = false  no profile: every boot starts the image's own set; only stateDir is
#                    written, which defaults to /run/… so the image runs with `--read-only`.
#
# Only manager "sysvinit" is implemented (busybox or coreutils and a shell are enough).
# supervisord and s6 would need their daemons in the Nix store (nixpkgs), systemd is no
# container entry point: those are evaluation errors.
#
# The result is the archive derivation, with extra attributes: `ref` ("name:tag"), `inputs`
# (the inputs of a `processes.image` resource), `set` (the processes.set inputs the image was
# built from: profile, stateDir, …), `profilePath`, `stateDir`, `entrypoint`.
#
# Built with a shell, tar, sha256sum, od, awk, sed, head, tail, find, stat (busybox applets in
# ferry's test kit; coreutils/gnutar in a nixpkgs stdenv).
{ mkSet }:
let
  inherit (builtins)
    attrNames attrValues concatMap concatStringsSep currentSystem filter genList hasAttr
    length listToAttrs replaceStrings sort toJSON unsafeDiscardStringContext;

  fail = msg: abort "ferry: ${msg}";
  q = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  uniq = l: attrNames (listToAttrs (map (x: { name = x; value = null; }) l));

  arch = {
    x86_64-linux = "amd64";
    aarch64-linux = "arm64";
    i686-linux = "386";
    armv7l-linux = "arm";
    powerpc64le-linux = "ppc64le";
    riscv64-linux = "riscv64";
    s390x-linux = "s390x";
  }.${currentSystem} or (fail "ferry.lib.processes.image: no OCI architecture known for ${currentSystem}");

  needs = {
    supervisord = "pkgs.python3Packages.supervisor (nixpkgs)";
    s6 = "pkgs.s6 (nixpkgs)";
  };

  image =
    { pkgs
    , manager ? "sysvinit"
    , processes
    , name
    , tag ? "latest"
    , imageName ? name            # the repository name: the image is imageName:tag
    , mutable ? false
    , exposedPorts ? [ ]          # [ 80 "53/udp" ]
    , env ? { }                   # extra environment of the container: { NAME = "value"; }
    , stateDir ? (if mutable then "/var/lib/ferry-processes/${name}" else "/run/ferry-processes/${name}")
    , profilePath ? "/nix/var/nix/profiles/ferry/processes-${name}"
    , path ? (if pkgs ? coreutils then [ pkgs.coreutils ] else [ ])
    , contents ? [ ]              # more packages: in the image, their bin/ on PATH
    , ids ? { }                   # { USER-OR-GROUP = N; } (default: 1000, 1001, … by name)
    , forceDisableUserChange ? false
    , readinessTimeout ? 30       # seconds, when a readiness check gives none
    , ...
    }@args:
    let
      where = "ferry.lib.processes.image (${name})";

      setArgs = removeAttrs args [ "tag" "imageName" "mutable" "exposedPorts" "env" "contents" "ids" "readinessTimeout" ]
        // { inherit pkgs manager processes name stateDir profilePath path forceDisableUserChange; }
        // (if args ? setpriv || !(pkgs ? util-linux) then { } else { setpriv = "${pkgs.util-linux}/bin/setpriv"; });

      userOf = filter (p: p.user != null || p.group != null) (attrValues processes);
      needsSetpriv = !forceDisableUserChange && userOf != [ ] && !(args ? setpriv) && !(pkgs ? util-linux);

      ok =
        if manager == "systemd" then
          fail "${where}: manager `systemd` cannot be an image's entry point (systemd as PID 1 of a container is a different thing); use manager = \"sysvinit\""
        else if hasAttr manager needs then
          fail "${where}: manager `${manager}` is not supported in images: it needs ${needs.${manager}} in the image, and only `sysvinit` is implemented so far; use manager = \"sysvinit\""
        else if manager != "sysvinit" then
          fail "${where}: unknown manager `${toString manager}` for an image (supported: sysvinit)"
        else if needsSetpriv then
          fail "${where}: a process runs as another user, which needs setpriv in the image: pass pkgs with util-linux, `setpriv = \"/nix/store/…/bin/setpriv\"`, or forceDisableUserChange = true"
        else true;

      set = mkSet setArgs;

      # Users and groups of the model, with ids (sorted by name, from 1000, unless `ids` says).
      users = uniq (concatMap (p: if p.user != null then [ p.user ] else [ ]) (attrValues processes));
      groups = uniq (users ++ concatMap (p: if p.group != null then [ p.group ] else [ ]) (attrValues processes));
      sortedNames = sort (a: b: a < b) groups;
      # An id from `ids`, else the model's uid/gid for it, else 1000 + its index by name.
      modelId = n: concatMap (p:
        (if p.user == n && (p.uid or null) != null then [ p.uid ] else [ ])
        ++ (if p.group == n && (p.gid or null) != null then [ p.gid ] else [ ])) (attrValues processes);
      idOf = n: ids.${n} or (if modelId n != [ ] then builtins.head (modelId n)
        else 1000 + builtins.head (filter (i: builtins.elemAt sortedNames i == n) (genList (i: i) (length sortedNames))));
      passwd = concatStringsSep "" ([
        "root:x:0:0:root:/root:/bin/sh\n"
      ] ++ map (u: "${u}:x:${toString (idOf u)}:${toString (idOf u)}::/var/empty:/sbin/nologin\n") users ++ [
        "nobody:x:65534:65534:nobody:/var/empty:/sbin/nologin\n"
      ]);
      group = concatStringsSep "" ([ "root:x:0:\n" ]
        ++ map (g: "${g}:x:${toString (idOf g)}:\n") groups
        ++ [ "nogroup:x:65534:\n" ]);

      pathStr = concatStringsSep ":" (map (p: "${p}/bin") (path ++ contents) ++ [ "/bin" "/usr/bin" ]);

      # PID 1: the set up in the processes.set layout (see manager.rs), then wait.
      entrypoint = pkgs.writeTextFile {
        name = "ferry-image-${name}-init";
        executable = true;
        text = ''
          #!${pkgs.runtimeShell}
          # Entry point of the ferry.lib.processes.image `${name}` (manager sysvinit, ${if mutable then "mutable" else "immutable"}).
          export PATH=${q pathStr}
          state=${q set.stateDir}
          runtime=${q set.runtimeDir}
          logs=${q set.logDir}
          built=${q (toString set.profile)}
          profile=${q profilePath}
          mutable=${if mutable then "1" else ""}
          active="$state/.ferry/active"
          say() { echo "ferry-image ${name}: $*"; }

          # The processes of profile $1 as "LEVEL NAME" lines, by level (from rc3.d/S<10+level>NAME).
          order() {
            for s in "$1"/etc/rc.d/rc3.d/S*; do
              [ -L "$s" ] || continue
              n=$(readlink "$s"); n=''${n##*/}
              l=''${s##*/S}; l=''${l%"$n"}
              echo "$((l - 10)) $n"
            done | sort -n -k1,1 -k2
          }

          # Wait until process $2 of profile $1 is ready (its readiness in manifest.json).
          ready() {
            cfg=$(readlink "$1/processes/$2")
            spec=$(sed -n 's|.*"config":"'"$cfg"'"[^{}]*"readiness":{\([^}]*\)}.*|\1|p' "$1/manifest.json")
            [ -n "$spec" ] || return 0
            port=$(echo "$spec" | sed -n 's/.*"tcpPort":\([0-9][0-9]*\).*/\1/p')
            host=$(echo "$spec" | sed -n 's/.*"host":"\([^"]*\)".*/\1/p')
            file=$(echo "$spec" | sed -n 's/.*"file":"\([^"]*\)".*/\1/p')
            t=$(echo "$spec" | sed -n 's/.*"timeout":\([0-9][0-9]*\).*/\1/p')
            t=$(( ''${t:-${toString readinessTimeout}} * 10 ))
            i=0
            while [ "$i" -lt "$t" ]; do
              if [ -n "$port" ]; then
                if ! command -v nc >/dev/null; then say "$2: no nc on PATH, not waiting for port $port"; return 0; fi
                nc -w 1 "''${host:-127.0.0.1}" "$port" </dev/null >/dev/null 2>&1 && return 0
              elif [ -n "$file" ]; then
                [ -e "$file" ] && return 0
              else
                return 0
              fi
              i=$((i + 1)); sleep 0.1
            done
            say "$2 is not ready after $((t / 10))s"
            return 1
          }

          current() {
            if [ -n "$mutable" ]; then readlink -f "$profile"; else echo "$built"; fi
          }

          # Dependents first; then whatever else is installed.
          stop_all() {
            cur=$(current)
            stopped=" "
            for n in $(order "$cur" | sort -rn -k1,1 -k2 | cut -d' ' -f2); do
              if [ -e "$state/init.d/$n" ]; then "$state/init.d/$n" stop; fi
              stopped="$stopped$n "
            done
            for i in "$state"/init.d/*; do
              case "$stopped" in *" ''${i##*/} "*) continue ;; esac
              if [ -e "$i" ]; then "$i" stop; fi
            done
            say "stopped"
          }
          trap 'stop_all; exit 0' TERM INT

          mkdir -p "$state" "$runtime" "$logs" "$active" "$state/init.d" /tmp
          # Pid files of an earlier run of this container name processes that are gone.
          for l in "$active"/*; do [ -L "$l" ] && rm -f "$runtime/''${l##*/}.pid"; done
          if [ -n "$mutable" ] && [ ! -L "$profile" ]; then
            # Generation 1, as nix-env makes it: PROFILE -> PROFILE-1-link -> store path.
            mkdir -p "$(dirname "$profile")"
            ln -sfn "$built" "$profile-1-link"
            ln -sfn "''${profile##*/}-1-link" "$profile"
          fi
          cur=$(current)
          say "starting $cur"
          # Installed: exactly the processes of the current generation.
          for l in "$active"/*; do
            [ -L "$l" ] || continue
            [ -e "$cur/processes/''${l##*/}" ] || rm -f "$l" "$state/init.d/''${l##*/}"
          done
          levels=$(order "$cur" | cut -d' ' -f1 | uniq)
          for lv in $levels; do
            names=$(order "$cur" | sed -n "s/^$lv //p")
            for n in $names; do
              c=$(readlink "$cur/processes/$n")
              ln -sfn "$c/init.d" "$state/init.d/$n"
              ln -sfn "$c" "$active/$n"
              "$state/init.d/$n" start || say "$n failed to start (see $logs/$n.log)"
            done
            for n in $names; do ready "$cur" "$n"; done
          done
          say "up"
          # Stay PID 1: `wait` reaps every child, orphans included; a signal ends it at once.
          while :; do
            sleep 3600 &
            wait $!
          done
        '';
      };

      bins = path ++ contents;

      configJson = toJSON {
        architecture = arch;
        os = "linux";
        created = "1970-01-01T00:00:01Z";
        config = {
          Entrypoint = [ "${entrypoint}" ];
          Env = [ "PATH=${pathStr}" ] ++ map (k: "${k}=${toString env.${k}}") (attrNames env);
          ExposedPorts = listToAttrs (map (p:
            let s = toString p; in { name = if builtins.match ".*/.*" s != null then s else "${s}/tcp"; value = { }; })
            exposedPorts);
          WorkingDir = "/";
          StopSignal = "SIGTERM";
          Labels = {
            "org.opencontainers.image.title" = name;
            "dev.ferry.processes.manager" = manager;
            "dev.ferry.processes.mutable" = if mutable then "true" else "false";
            "dev.ferry.processes.profile" = unsafeDiscardStringContext (toString set.profile);
            "dev.ferry.processes.profilePath" = profilePath;
            "dev.ferry.processes.stateDir" = set.stateDir;
          };
        };
        rootfs = { type = "layers"; diff_ids = [ "@LAYER0@" "@LAYER1@" ]; };
        history = [
          { created = "1970-01-01T00:00:01Z"; created_by = "ferry.lib.processes.image: root skeleton"; }
          { created = "1970-01-01T00:00:01Z"; created_by = "ferry.lib.processes.image: store closure"; }
        ];
      };

      archive = pkgs.runCommand "${name}-image.tar"
        {
          exportReferencesGraph = [ "closure" entrypoint ] ++ concatMap (p: [ "closure-${baseNameSafe p}" p ]) bins;
          inherit configJson passwd group;
          repoTag = ref;
          shell = pkgs.runtimeShell;
          binDirs = concatStringsSep " " (map (p: "${p}/bin") bins);
        }
        ''
          # The store paths of the closure: the first line of each exportReferencesGraph block
          # (path, deriver, count, references).
          for f in closure*; do
            awk '{ if (s == 0) { print; s = 1 } else if (s == 1) { s = 2 } else if (s == 2) { n = $0 + 0; s = n > 0 ? 3 : 0 } else if (--n == 0) s = 0 }' "$f"
          done | sort -u > paths

          # Layer 0: the root skeleton, written entry by entry so every file is root's with
          # fixed times and modes (tar records the builder's uid; ustar is simple enough).
          mkdir -p root/etc root/tmp root/bin root/usr/bin root/nix/store root/nix/var/nix/profiles root/root root/run root/var/empty
          chmod 1777 root/tmp
          chmod 0700 root/root
          chmod 0555 root/var/empty
          printf '%s' "$passwd" > root/etc/passwd
          printf '%s' "$group" > root/etc/group
          chmod 0644 root/etc/passwd root/etc/group
          ln -s "$shell" root/bin/sh
          for d in $binDirs; do
            for b in "$d"/*; do
              [ -e "$b" ] || continue
              [ -e "root/bin/''${b##*/}" ] || [ -L "root/bin/''${b##*/}" ] || ln -s "$b" "root/bin/''${b##*/}"
            done
          done
          [ -e root/bin/env ] && ln -s /bin/env root/usr/bin/env

          zeros() { head -c "$1" /dev/zero; }
          field() { printf '%s' "$1"; zeros $(( $2 - ''${#1} )); }
          num() { printf "%0$(( $2 - 1 ))o" "$1"; zeros 1; }
          # entry NAME MODE(octal digits) SIZE TYPE LINK: a ustar header (uid/gid 0, mtime 1).
          entry() {
            if [ "''${#1}" -gt 99 ]; then echo "path too long for the skeleton layer: $1" >&2; exit 1; fi
            m=0000000$2; m=''${m#"''${m%???????}"}
            { field "$1" 100; printf '%s' "$m"; zeros 1; num 0 8; num 0 8; num "$3" 12; num 1 12
              printf '        %s' "$4"; field "$5" 100; printf 'ustar'; zeros 1; printf '00'
              field root 32; field root 32; num 0 8; num 0 8; zeros 167; } > hdr
            sum=$(od -An -v -tu1 hdr | awk '{ for (i = 1; i <= NF; i++) s += $i } END { print s }')
            { head -c 148 hdr; printf '%06o' "$sum"; zeros 1; printf ' '; tail -c +157 hdr; } >> layer0.tar
          }
          : > layer0.tar
          (cd root && find . -mindepth 1) | sed 's|^\./||' | sort > skeleton
          while read -r p; do
            f=root/$p
            m=$(stat -c %a "$f")
            if [ -L "$f" ]; then entry "$p" 777 0 2 "$(readlink "$f")"
            elif [ -d "$f" ]; then entry "$p/" "$m" 0 5 ""
            else
              s=$(stat -c %s "$f")
              entry "$p" "$m" "$s" 0 ""
              cat "$f" >> layer0.tar
              r=$(( s % 512 )); [ "$r" -eq 0 ] || zeros $(( 512 - r )) >> layer0.tar
            fi
          done < skeleton
          zeros 1024 >> layer0.tar

          # Layer 1: the closure, straight from the store (root's files, mtime 1).
          tar -cf layer1.tar -C / $(sed 's|^/||' paths)

          h0=$(sha256sum layer0.tar | cut -d' ' -f1)
          h1=$(sha256sum layer1.tar | cut -d' ' -f1)
          mkdir image
          mv layer0.tar "image/$h0.tar"
          mv layer1.tar "image/$h1.tar"
          printf '%s' "$configJson" | sed -e "s/@LAYER0@/sha256:$h0/" -e "s/@LAYER1@/sha256:$h1/" > config.json
          c=$(sha256sum config.json | cut -d' ' -f1)
          mv config.json "image/$c.json"
          printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s.tar","%s.tar"]}]' "$c" "$repoTag" "$h0" "$h1" > image/manifest.json
          (cd image && tar -cf "$out" manifest.json "$c.json" "$h0.tar" "$h1.tar")
        '';

      baseNameSafe = p: builtins.substring 0 8 (builtins.hashString "sha256" (unsafeDiscardStringContext (toString p)));

      ref = "${imageName}:${tag}";
    in
    assert ok;
    archive // {
      inherit ref entrypoint set profilePath mutable;
      stateDir = set.stateDir;
      inputs = { archive = archive; inherit ref; };
    };
in
image
