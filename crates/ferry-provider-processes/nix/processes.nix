# ferry.lib.processes: a process-manager-agnostic processes model and its generators
# (supervisord, s6, sysvinit, systemd). See docs/guide/processes.md.
#
#   let p = ferry.lib.processes; in
#   resources.web = {
#     type = "processes.set";
#     inputs = p.set {
#       inherit pkgs; manager = "supervisord"; name = "web";
#       processes.webapp = p.mkProcess { command = [ "${webapp}/bin/webapp" ]; };
#     };
#   };
#
# `set` validates the model (manager, names, dependencies, cycles, users), generates one config
# store path per process (`processes/NAME` in the profile: a change of anything about a process
# changes exactly that path) and one profile derivation holding them plus `manifest.json` (what
# the `processes.set` provider reads: order, dependencies, readiness). It returns the resource's
# inputs.
#
# `pkgs` is a nixpkgs-compatible package set; only `runtimeShell`, `writeTextFile` and
# `runCommand` are used, plus `coreutils` (scripts' PATH) when present. ferry's tests pass the
# busybox set of crates/ferry-testkit/nix (its `pkgs` attribute).
{ }:
let
  inherit (builtins)
    all any attrNames attrValues concatMap concatStringsSep elem filter foldl' genList
    genericClosure hasAttr head isAttrs isBool isFunction isInt isList isString length
    listToAttrs map mapAttrs match replaceStrings sort stringLength toJSON typeOf;

  fail = msg: abort "ferry: ${msg}";

  managers = [ "supervisord" "s6" "sysvinit" "systemd" ];
  restarts = [ "always" "on-failure" "no" ];

  # Shell single-quoting.
  q = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  validName = n: match "[A-Za-z0-9_][A-Za-z0-9_.-]*" n != null && stringLength n <= 64;
  validUser = n: match "[a-z_][a-z0-9_-]*[$]?" n != null && stringLength n <= 32;

  maxList = foldl' (a: b: if b > a then b else a) 0;

  # A command word: anything `toString` makes a string of.
  word = x: isString x || isInt x || builtins.isPath x || (isAttrs x && x ? outPath);

  # A process of the model. Every argument but `command` is optional.
  mkProcess =
    { command                      # [ program arg ... ] run in the foreground (or a shell string)
    , environment ? { }            # { NAME = "value"; }
    , user ? null                  # run as this user (needs root; ignored with forceDisableUserChange)
    , group ? null                 # (default: the user's own group); both are created if missing
    , uid ? null                   # for a created user, e.g. resources.ids.uids.NAME
    , gid ? null                   # for a created group, e.g. resources.ids.gids.NAME
    , workingDirectory ? null
    , dependsOn ? [ ]              # names of processes of the same set started (and ready) first
    , readiness ? null             # { tcpPort = N; host ? "127.0.0.1"; } | { file = PATH; }; timeout ? 30
    , restart ? "always"           # always | on-failure | no
    , initialize ? ""              # shell run as root once, before the first start
    , requiresUniqueIdsFor ? [ ]   # pools of an ids.pool resource this process claims from
    , description ? ""
    , stopTimeout ? 10             # seconds between SIGTERM and SIGKILL
    }: {
      _type = "ferry.process";
      inherit command environment user group uid gid workingDirectory dependsOn readiness restart
        initialize requiresUniqueIdsFor description stopTimeout;
    };

  # { pool = [ claimant ... ]; } -> { claimant = [ pool ... ]; } helper: the claimants of an
  # ids.pool resource from one or more processes models.
  claimants = processes:
    listToAttrs (concatMap
      (n: let p = processes.${n}; in
        if (p.requiresUniqueIdsFor or [ ]) == [ ] then [ ]
        else [{ name = n; value = p.requiresUniqueIdsFor; }])
      (attrNames processes));

  # ------------------------------------------------------------------------------ validation

  check = where: processes:
    let
      names = attrNames processes;
      bad = msg: fail "${where}: ${msg}";
      one = n:
        let
          p = processes.${n};
          w = "process `${n}`";
          str = attr: v: if v == null || isString v then true else bad "${w}: `${attr}` must be a string, got ${typeOf v}";
        in
        if !validName n then bad "invalid process name `${n}` (letters, digits, `_`, `.`, `-`; at most 64)"
        else if !isAttrs p || (p._type or null) != "ferry.process" then bad "${w} must be made with ferry.lib.processes.mkProcess"
        else if !(isList p.command && p.command != [ ] && all word p.command) && !isString p.command
        then bad "${w}: `command` must be a non-empty list of strings, paths or derivations (or a shell string)"
        else if !isList p.dependsOn || !all isString p.dependsOn then bad "${w}: `dependsOn` must be a list of process names"
        else if any (d: !(hasAttr d processes)) p.dependsOn then
          bad "${w} depends on `${head (filter (d: !(hasAttr d processes)) p.dependsOn)}`, which is not a process of this set (processes: ${concatStringsSep ", " names})"
        else if p.user != null && !(isString p.user && validUser p.user) then bad "${w}: invalid user name `${toString p.user}`"
        else if p.group != null && !(isString p.group && validUser p.group) then bad "${w}: invalid group name `${toString p.group}`"
        else if !(p.uid or null == null || isInt p.uid || isString p.uid) then bad "${w}: `uid` must be a number"
        else if !(p.gid or null == null || isInt p.gid || isString p.gid) then bad "${w}: `gid` must be a number"
        else if !(elem p.restart restarts) then bad "${w}: `restart` must be one of ${concatStringsSep ", " restarts}, got `${toString p.restart}`"
        else if !isAttrs p.environment then bad "${w}: `environment` must be an attribute set"
        else if p.readiness != null && !(isAttrs p.readiness && (p.readiness ? tcpPort || p.readiness ? file))
        then bad "${w}: `readiness` must be { tcpPort = N; } or { file = PATH; }"
        else if !isInt p.stopTimeout then bad "${w}: `stopTimeout` must be an integer"
        else str "workingDirectory" p.workingDirectory && str "initialize" p.initialize;
      cyclic = filter (n: elem n (closure n)) names;
      closure = n: map (x: x.key) (genericClosure {
        startSet = map (d: { key = d; }) processes.${n}.dependsOn;
        operator = x: map (d: { key = d; }) (processes.${x.key}.dependsOn or [ ]);
      });
    in
    if !isAttrs processes then bad "`processes` must be an attribute set of processes"
    else if !(all one names) then false
    else if cyclic != [ ] then bad "dependency cycle among processes: ${concatStringsSep ", " cyclic}"
    else true;

  # ------------------------------------------------------------------------------ the set

  set =
    { pkgs
    , manager
    , processes
    , name ? "processes"
    , host ? "local"
    , stateDir ? "/var/lib/ferry-processes/${name}"
    , runtimeDir ? "${stateDir}/run"
    , logDir ? "${stateDir}/log"
    , forceDisableUserChange ? false
    , setpriv ? (if pkgs ? util-linux then "${pkgs.util-linux}/bin/setpriv" else "/usr/bin/setpriv")
    , path ? (if pkgs ? coreutils then [ pkgs.coreutils ] else [ ])
    , unitPrefix ? "ferry-${name}-"
    , ...
    }@args:
    let
      where = "ferry.lib.processes.set (${name})";
      ok =
        if !(elem manager managers) then fail "${where}: unknown manager `${toString manager}` (supported: ${concatStringsSep ", " managers})"
        else if !validName name then fail "${where}: invalid set name `${name}`"
        else check where processes;

      names = attrNames processes;
      level = n: let ds = processes.${n}.dependsOn; in if ds == [ ] then 0 else 1 + maxList (map level ds);
      levels = mapAttrs (n: _: level n) processes;
      order = sort (a: b: levels.${a} < levels.${b} || (levels.${a} == levels.${b} && a < b)) names;

      pathStr = concatStringsSep ":" (map (p: "${p}/bin") path ++ [ "/run/wrappers/bin" "/usr/local/bin" "/usr/bin" "/bin" ]);

      runScript = n: p:
        let
          cmd = if isString p.command then p.command
            else concatStringsSep " " (map (x: q (toString x)) p.command);
          drop =
            if forceDisableUserChange || (p.user == null && p.group == null) then ""
            else "${setpriv} "
              + (if p.user != null then "--reuid=${p.user} " else "")
              + (if p.group != null then "--regid=${p.group} " else if p.user != null then "--regid=$(id -g ${p.user}) " else "")
              + (if p.user != null then "--init-groups " else "--clear-groups ")
              + "-- ";
          env = concatStringsSep "" (map (k: "export ${k}=${q (toString p.environment.${k})}\n") (attrNames p.environment));
          init = if p.initialize == "" then "" else ''
            if [ ! -e ${q "${stateDir}/.ferry-initialized/${n}"} ]; then
            ( ${p.initialize}
            )
            mkdir -p ${q "${stateDir}/.ferry-initialized"} && touch ${q "${stateDir}/.ferry-initialized/${n}"}
            fi
          '';
        in
        pkgs.writeTextFile {
          name = "ferry-process-${n}-run";
          executable = true;
          text = ''
            #!${pkgs.runtimeShell}
            # ${n}: ${p.description}
            set -e
            export PATH=${q pathStr}
            ${env}${init}${if p.workingDirectory != null then "cd ${q p.workingDirectory}\n" else ""}exec ${drop}${cmd}
          '';
        };

      file = n: fname: text: executable: pkgs.writeTextFile { name = "ferry-process-${n}-${fname}"; inherit text executable; };

      native = {
        supervisord = n: p: run: {
          "program.conf" = file n "program.conf" ''
            [program:${n}]
            command=${run}
            autostart=true
            autorestart=${{ always = "true"; on-failure = "unexpected"; no = "false"; }.${p.restart}}
            startsecs=1
            startretries=2
            priority=${toString (100 + levels.${n})}
            stopsignal=TERM
            stopwaitsecs=${toString p.stopTimeout}
            stopasgroup=true
            killasgroup=true
            redirect_stderr=true
            stdout_logfile=${logDir}/${n}.log
          '' false;
        };
        s6 = n: p: run: {
          # s6-supervise restarts a process when it exits; `finish` keeps it down when it must not.
          "finish" = file n "finish" (''
            #!${pkgs.runtimeShell}
            export PATH=${q pathStr}
          '' + {
            always = "exit 0\n";
            on-failure = "if [ \"$1\" = 0 ]; then exec s6-svc -d .; fi\n";
            no = "exec s6-svc -d .\n";
          }.${p.restart}) true;
          "timeout-kill" = file n "timeout-kill" "${toString (p.stopTimeout * 1000)}\n" false;
          "dependencies" = file n "dependencies" (concatStringsSep "" (map (d: "${d}\n") p.dependsOn)) false;
        };
        sysvinit = n: p: run:
          let pid = "${runtimeDir}/${n}.pid"; log = "${logDir}/${n}.log"; in {
            "init.d" = file n "init.d" ''
              #!${pkgs.runtimeShell}
              ### BEGIN INIT INFO
              # Provides:          ${n}
              # Required-Start:    ${concatStringsSep " " p.dependsOn}
              # Required-Stop:     ${concatStringsSep " " p.dependsOn}
              # Default-Start:     2 3 4 5
              # Default-Stop:      0 1 6
              # Short-Description: ${if p.description == "" then n else p.description}
              ### END INIT INFO
              export PATH=${q pathStr}
              pidfile=${q pid}
              # Alive and not a zombie (an init that does not reap leaves those behind).
              running() {
                [ -f "$pidfile" ] && p=$(cat "$pidfile") && kill -0 "$p" 2>/dev/null || return 1
                s=$(cat /proc/"$p"/stat 2>/dev/null) || return 0
                s=''${s##*) }; [ "''${s%% *}" != Z ]
              }
              start() {
                if running; then echo "${n} is already running (pid $(cat "$pidfile"))"; return 0; fi
                mkdir -p ${q runtimeDir} ${q logDir}
                setsid ${run} >>${q log} 2>&1 </dev/null &
                echo $! > "$pidfile"
                sleep 1
                if running; then echo "${n} started (pid $(cat "$pidfile"))"; else rm -f "$pidfile"; echo "${n} failed to start (see ${log})" >&2; return 1; fi
              }
              stop() {
                if ! running; then rm -f "$pidfile"; echo "${n} is not running"; return 0; fi
                p=$(cat "$pidfile")
                kill -TERM -"$p" 2>/dev/null || kill -TERM "$p"
                i=0
                while kill -0 "$p" 2>/dev/null; do
                  i=$((i + 1))
                  if [ "$i" -gt ${toString (p.stopTimeout * 10)} ]; then kill -KILL -"$p" 2>/dev/null || kill -KILL "$p"; fi
                  sleep 0.1
                done
                rm -f "$pidfile"
                echo "${n} stopped"
              }
              case "$1" in
                start) start ;;
                stop) stop ;;
                restart) stop && start ;;
                status) if running; then echo "${n} is running (pid $(cat "$pidfile"))"; else echo "${n} is not running"; exit 3; fi ;;
                *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
              esac
            '' true;
          };
        systemd = n: p: run:
          let unit = d: "${unitPrefix}${d}.service"; in {
            "${unit n}" = file n "unit" ''
              [Unit]
              Description=${if p.description == "" then "${name}: ${n}" else p.description}
              ${concatStringsSep "" (map (d: "Wants=${unit d}\nAfter=${unit d}\n") p.dependsOn)}
              [Service]
              ExecStart=${run}
              # The log file the other managers write too (and that errors point to).
              StandardOutput=append:${logDir}/${n}.log
              StandardError=inherit
              Restart=${p.restart}
              KillMode=control-group
              TimeoutStopSec=${toString p.stopTimeout}

              [Install]
              WantedBy=multi-user.target
            '' false;
          };
      };

      # One store path per process: its run script and its manager's native config.
      configOf = n:
        let
          p = processes.${n};
          run = runScript n p;
          files = native.${manager} n p run // { run = run; };
        in
        pkgs.runCommand "ferry-process-${n}-${manager}" { } (''
          mkdir -p $out
        '' + concatStringsSep "" (map (f: "ln -s ${files.${f}} $out/${q f}\n") (attrNames files)));

      configs = listToAttrs (map (n: { name = n; value = configOf n; }) names);

      manifest = {
        inherit manager stateDir runtimeDir logDir order name;
        processes = mapAttrs (n: p: {
          config = configs.${n};
          inherit (p) dependsOn readiness restart;
          # Who runs it (null: the deployer), created by the switch when missing.
          user = if forceDisableUserChange then null else p.user;
          group = if forceDisableUserChange then null else p.group;
          uid = p.uid or null;
          gid = p.gid or null;
          level = levels.${n};
          unit = if manager == "systemd" then "${unitPrefix}${n}.service" else null;
        }) processes;
      };

      supervisordConf = pkgs.writeTextFile {
        name = "ferry-supervisord.conf";
        text = ''
          [unix_http_server]
          file=${runtimeDir}/supervisord.sock
          chmod=0700

          [supervisord]
          pidfile=${runtimeDir}/supervisord.pid
          logfile=${logDir}/supervisord.log
          childlogdir=${logDir}
          directory=${stateDir}

          [rpcinterface:supervisor]
          supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

          [supervisorctl]
          serverurl=unix://${runtimeDir}/supervisord.sock

          [include]
          files = ${stateDir}/conf.d/*.conf
        '';
      };

      extra = {
        supervisord = "ln -s ${supervisordConf} $out/supervisord.conf\n";
        s6 = "";
        sysvinit = "mkdir -p $out/etc/rc.d/init.d $out/etc/rc.d/rc3.d\n" + concatStringsSep "" (map (n: ''
          ln -s ${configs.${n}}/init.d $out/etc/rc.d/init.d/${q n}
          ln -s ../init.d/${q n} $out/etc/rc.d/rc3.d/S${toString (10 + levels.${n})}${q n}
        '') names);
        systemd = "mkdir -p $out/etc/systemd/system\n" + concatStringsSep "" (map (n: ''
          ln -s ${configs.${n}}/${unitPrefix}${n}.service $out/etc/systemd/system/${unitPrefix}${n}.service
        '') names);
      };

      manifestFile = pkgs.writeTextFile { name = "ferry-processes-manifest.json"; text = toJSON manifest; };

      profile = pkgs.runCommand "ferry-processes-${name}-${manager}" { } (''
        mkdir -p $out/processes
        ln -s ${manifestFile} $out/manifest.json
      '' + concatStringsSep "" (map (n: "ln -s ${configs.${n}} $out/processes/${q n}\n") names)
      + extra.${manager});

      passthrough = removeAttrs args [ "pkgs" "processes" "name" "setpriv" "path" "unitPrefix" ];
    in
    assert ok;
    passthrough // {
      inherit host manager stateDir runtimeDir logDir profile;
      processes = mapAttrs (n: p: removeAttrs p [ "_type" ] // { config = configs.${n}; }) processes;
    };
in
{
  inherit mkProcess set claimants managers;
  image = import ./processes-image.nix { mkSet = set; };
}
