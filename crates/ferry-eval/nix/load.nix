# Loading a deployment (used by eval.nix): where its top-level value comes from — a file, or
# a flake's `ferryDeployments.NAME` — and how a value becomes declarations. Three shapes:
#
# * plain: `{ resources, ferry, ... }: { resources = { … }; imports = [ … ]; name = "…"; }`,
#   with ferry's own `imports` (mix-ins: a path or an inline module of the same shape);
# * module: `ferry.modules { lib = nixpkgs.lib; modules = [ … ]; }` (anywhere a plain module
#   may stand), evaluated with the user's own nixpkgs `lib.evalModules` and ferry's options
#   (./modules.nix), so `options`, `imports`, `mkIf`, `mkMerge` and priorities are the module
#   system's and errors name option paths (`resources.web.protect`);
# * flake: the same values, taken from `(builtins.getFlake URL).ferryDeployments.NAME`, where
#   URL is the locked reference the Rust side computed (`nix flake metadata`).
#
# `declsFor resources` is called once per evaluation mode with that mode's `resources` view
# (the outputs), so nothing is forced outside what a mode asks for.
{ args, ferry, fail }:
let
  inherit (builtins)
    attrNames concatMap concatStringsSep elemAt filter functionArgs genList groupBy hasAttr head
    isAttrs isFunction isList isPath isString length mapAttrs typeOf;

  flake = args.flake or null;

  top =
    if flake == null then { file = toString args.file; value = import args.file; }
    else
      let
        label = toString args.file;
        outputs = builtins.getFlake flake.url;
        ds = outputs.ferryDeployments or
          (fail "${label}: the flake has no output `ferryDeployments`; declare one as ferryDeployments.${flake.attr} = { resources, ferry, ... }: { resources = { … }; };");
        names = concatStringsSep ", " (map (n: "`${n}`") (attrNames ds));
      in
      {
        file = label;
        value =
          if !isAttrs ds then fail "${label}: `ferryDeployments` must be an attribute set of deployments, got ${typeOf ds}"
          else if hasAttr flake.attr ds then ds.${flake.attr}
          else fail "${label}: the flake has no deployment ferryDeployments.${flake.attr}${if names == "" then "" else "; it has ${names}"}";
      };

  # The module system's signature: a file written as a module but given as a plain deployment.
  looksLikeModule = m: isFunction m && (let a = functionArgs m; in a ? config || a ? lib || a ? options);

  callModule = resources: file: m:
    let
      v = if looksLikeModule m
        then fail "${file} is a module-system module (it takes `config`/`lib`); load it with ferry.modules { lib = nixpkgs.lib; modules = [ ./module.nix ]; }"
        else if isFunction m then m { inherit resources ferry; } else m;
    in
    if isAttrs v && (v._type or null) == "ferry-modules" then fromModules resources file v
    else if isAttrs v then checkShape file v
    else fail "${file} must evaluate to an attribute set or a function returning one, got ${typeOf v}";

  # ---------------------------------------------------------------- module deployments

  fromModules = resources: file: spec:
    let
      lib =
        if spec ? lib then spec.lib
        else if spec ? nixpkgs then import (if isPath spec.nixpkgs then spec.nixpkgs + "/lib" else "${spec.nixpkgs}/lib")
        else fail "${file}: ferry.modules needs `lib` (nixpkgs' lib, e.g. nixpkgs.lib) or `nixpkgs` (a nixpkgs path)";
      modules =
        if isList (spec.modules or null) then spec.modules
        else fail "${file}: ferry.modules needs `modules`, a list of modules";
      evaluated = lib.evalModules {
        modules = [ ./modules.nix ] ++ modules;
        specialArgs = (spec.specialArgs or { }) // { inherit resources ferry; };
      };
      cfg = evaluated.config;
      # Every attribute present (null: not set), so reading one forces only that option.
      decl = r: { inherit (r) type inputs tags protect timeout provider; };
      # The files that define each resource, for messages: the module system's definitions
      # of `resources` (`definitionsWithLocations`, or before nixpkgs 21.05 `files` beside
      # `definitions`), whose properties (`mkIf`, `mkMerge`) are pushed down and discharged
      # (a false `mkIf` defines nothing). Anonymous modules (`<unknown-file>`) count as the
      # file holding `ferry.modules`.
      opt = evaluated.options.resources;
      defs = opt.definitionsWithLocations or (genList
        (i: { file = elemAt opt.files i; value = elemAt opt.definitions i; })
        (length (opt.files or [ ])));
      canTell = lib ? pushDownProperties && lib ? dischargeProperties;
      defines = n: d:
        let r = builtins.tryEval (builtins.any
          (v: isAttrs v && v ? ${n} && length (lib.dischargeProperties v.${n}) > 0)
          (lib.pushDownProperties d.value));
        in !r.success || r.value;
      definedIn = n:
        let
          named = map (d: if d.file == "<unknown-file>" then file else toString d.file) (filter (defines n) defs);
          unique = builtins.sort builtins.lessThan (builtins.foldl' (acc: f: if builtins.elem f acc then acc else acc ++ [ f ]) [ ] named);
        in if !canTell || unique == [ ] then file else concatStringsSep ", " unique;
    in
    {
      resources = mapAttrs (n: decl) cfg.resources;
      definedIn = mapAttrs (n: _: definedIn n) cfg.resources;
      name = cfg.name;
      fromModules = true;
    };

  # ---------------------------------------------------------------- plain deployments

  # A module may set only the attributes ferry defines; anything else is a typo that would
  # otherwise drop resources silently (and so destroy them).
  moduleAttrs = [ "resources" "imports" "name" ];
  checkShape = file: v:
    let unknown = filter (a: !(builtins.elem a moduleAttrs)) (attrNames v);
    in if unknown == [ ] then v
    else
      let
        a = head unknown;
        near = filter (k: distance a k <= 2) moduleAttrs;
        hint =
          if near != [ ] then " (did you mean `${head near}`?)"
          else if a == "options" || a == "config" then " (module-system options need ferry.modules { lib = nixpkgs.lib; modules = [ … ]; })"
          else "";
      in fail "${file}: unknown attribute `${a}`${hint}; a deployment or module sets only ${concatStringsSep ", " (map (k: "`${k}`") moduleAttrs)}";

  # Levenshtein distance of two short strings (for "did you mean").
  distance = a: b:
    let
      la = builtins.stringLength a;
      lb = builtins.stringLength b;
      ch = s: i: builtins.substring i 1 s;
      min3 = x: y: z: let m = if x < y then x else y; in if m < z then m else z;
      row = prev: i:
        builtins.foldl'
          (acc: j:
            acc ++ [ (min3 (elemAt prev (j + 1) + 1) (elemAt acc j + 1)
              (elemAt prev j + (if ch a i == ch b j then 0 else 1))) ])
          [ (i + 1) ] (genList (j: j) lb);
      last = builtins.foldl' row (genList (j: j) (lb + 1)) (genList (i: i) la);
    in elemAt last lb;

  modulesFor = resources:
    let
      mk = key: file: value: { inherit key file; module = callModule resources file value; };
      fromImport = parent: i: x:
        if isPath x || isString x then mk (toString x) (toString x) (import x)
        else mk "${parent.key}#imports.${toString i}" "${parent.file} (imports[${toString i}])" x;
      expand = item:
        let imps = item.module.imports or [ ];
        in if item.module.fromModules or false then [ ]
        else if !isList imps then fail "${item.file}: `imports` must be a list"
        else genList (i: fromImport item i (elemAt imps i)) (length imps);
    in
    builtins.genericClosure {
      startSet = [ (mk top.file top.file top.value) ];
      operator = expand;
    };
in
{
  # name -> { name, file, files, decl } for the `resources` view given.
  declsFor = resources:
    let
      entries = concatMap
        (m:
          let rs = m.module.resources or { };
          in if !isAttrs rs then fail "${m.file}: `resources` must be an attribute set"
          else map (name: { inherit name; file = m.module.definedIn.${name} or m.file; decl = rs.${name}; }) (attrNames rs))
        (modulesFor resources);
      byName = groupBy (e: e.name) entries;
    in
    mapAttrs (name: es: head es // { files = map (e: e.file) es; }) byName;

  # The top-level `name` (recorded in state), evaluated with every output pending; may throw.
  nameWith = resources: (callModule resources top.file top.value).name or null;

  topFile = top.file;
}
