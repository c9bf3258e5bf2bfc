# ferry's evaluation wrapper. Called by the Rust evaluator as
#   nix-instantiate --eval --strict --json eval.nix --arg argsFile /path/args.json
# It loads the user's deployment (and its imports), builds `resources` as a fixpoint over the
# declared names, and reports, for each pending resource, whether its inputs can be computed yet
# (throw mode: unknown outputs throw, caught by tryEval) plus a preview in which unknown outputs
# are recognisable placeholder strings (placeholder mode). See ARCHITECTURE.md, "Evaluation".
#
# User errors use `abort` (not caught by tryEval) with a message starting "ferry: "; `throw`
# is reserved for "this output is not known yet".
{ argsFile }:
let
  inherit (builtins)
    attrNames concatMap elemAt filter fromJSON genList getContext groupBy hasAttr head
    isAttrs isFunction isList isPath isString length listToAttrs map mapAttrs readFile
    removeAttrs toJSON tryEval typeOf unsafeDiscardStringContext;

  args = fromJSON (readFile argsFile);
  known = mapAttrs markSensitive args.known; # name -> outputs (settled this run)
  recorded = mapAttrs (name: r: r // { outputs = markSensitive name r.outputs; }) args.recorded; # from state (optimistic round)
  unstable = listToAttrs (map (n: { name = n; value = true; }) args.unstable);
  schemas = args.schemas; # "provider.kind" -> { outputs = [..]; outputNamesInput = null | "x"; heavy = bool; }
  ferry = import ./lib.nix { };

  fail = msg: abort "ferry: ${msg}";
  pending = name: throw "ferry-pending:${name}";
  placeholder = name: out: "<ferry:unknown:${name}:${out}>";

  # Sensitive outputs carry a context naming a derivation that does not exist: a derivation (or
  # `toFile`) built from one fails to instantiate — before anything is written to the store —
  # with an error naming the marker, `ferry-sensitive-NAME=OUTPUT.drv`. Plain use (an input
  # of a kind that keeps secrets out of the store) is unaffected; the marker is removed from
  # the context ferry realises (`contextOf`).
  markerSuffix = ".drv";
  markerOf = name: out: "/nix/store/00000000000000000000000000000000-ferry-sensitive-${name}=${out}${markerSuffix}";
  isMarker = p: builtins.match "/nix/store/0{32}-ferry-sensitive-.*" p != null;
  markSensitive = name: outs:
    let sens = if args.markSensitive or true then args.sensitive.${name} or [ ] else [ ];
    in
    mapAttrs (o: v: if builtins.elem o sens && isString v
      then builtins.appendContext v { ${markerOf name o} = { outputs = [ "out" ]; }; } else v) outs;

  # Where the deployment comes from (file or flake) and its shapes (plain, modules): load.nix.
  load = import ./load.nix { inherit args ferry fail; };
  inherit (load) declsFor;

  # A fixpoint of the deployment where `outputsOf name entry` supplies resources.NAME.
  fix = outputsOf:
    let
      decls = declsFor resources;
      resources = mapAttrs outputsOf decls;
    in decls;

  # ---------------------------------------------------------------- the modes

  # The input named by a schema's `outputNamesInput`: a list of extra output names, or an
  # attribute set { SUB = [ OUTPUT ... ]; } naming nested outputs: each OUTPUT is an attribute
  # set over the SUBs listing it (`ids.pool`: claimants -> pools, read as resources.ids.POOL.SUB).
  namesInputOf = e:
    let s = schemas.${e.decl.type or ""} or null;
    in if s == null || s.outputNamesInput == null then [ ]
    else
      let r = tryEval (fromJSON (toJSON (e.decl.inputs.${s.outputNamesInput} or [ ])));
      in if r.success then r.value else [ ];

  nestedOf = e:
    let v = namesInputOf e;
    in if !isAttrs v then { }
    else builtins.foldl'
      (acc: sub:
        let outs = filter isString (if isList v.${sub} then v.${sub} else [ ]);
        in builtins.foldl' (a: o: a // { ${o} = (a.${o} or [ ]) ++ [ sub ]; }) acc outs)
      { } (attrNames v);

  outputNamesOf = e:
    let
      s = schemas.${e.decl.type or ""} or null;
      v = namesInputOf e;
      extra = if isList v then v else attrNames (nestedOf e);
    in if s == null then null else s.outputs ++ extra;

  placeholderOutputs = placeholderOutputsWith placeholder;
  # The same with another spelling: a value equal in both views depends on no unknown output.
  placeholder2 = name: out: "<ferry:unknown2:${name}:${out}>";
  placeholderOutputsWith = placeholder: name: e:
    let
      ns = outputNamesOf e;
      nested = nestedOf e;
      value = o:
        if hasAttr o nested
        then listToAttrs (map (sub: { name = sub; value = placeholder name "${o}.${sub}"; }) nested.${o})
        else placeholder name o;
    in if ns == null then pending name
    else listToAttrs (map (o: { name = o; value = value o; }) ns);

  # Throw mode, optimistic: settled outputs are known; recorded outputs of resources whose
  # inputs are unchanged ("stable") are lent to their dependents; everything else throws.
  main = fix (name: e:
    if hasAttr name known then known.${name}
    else if isStable name then recorded.${name}.outputs
    else pending name);

  inputsJson = e:
    tryEval (
      let v = e.decl.inputs or { };
      in if isAttrs v then toJSON v
      else fail "resource `${e.name}` (${e.file}): `inputs` must be an attribute set, got ${typeOf v}");

  mainJson = mapAttrs (name: e: inputsJson e) main;

  # A resource recorded with no dependencies is tried first in the declarations' view (every
  # output pending): if its inputs evaluate there they use no output, so they are its inputs
  # and it has no edges — a changed NixOS system is evaluated once, not again for edges.
  isolatedJson = mapAttrs (name: e: inputsJson e) declMode;
  isolatedOk = name: (recorded.${name}.noDependencies or false) && isolatedJson.${name}.success;
  jsonOf = name: if isolatedOk name then isolatedJson.${name} else mainJson.${name};

  isStable = name: stable.${name} or false;
  stable = mapAttrs
    (name: r:
      !(hasAttr name unstable) && !(hasAttr name known) && hasAttr name main
      && (let j = jsonOf name; in j.success && fromJSON (unsafeDiscardStringContext j.value) == r.inputs))
    recorded;

  # Placeholder mode: unknown outputs become placeholder strings (preview for `ferry plan`).
  preview = fix (name: e:
    if hasAttr name known then known.${name}
    else if isStable name then recorded.${name}.outputs
    else placeholderOutputs name e);
  preview2 = fix (name: e:
    if hasAttr name known then known.${name}
    else if isStable name then recorded.${name}.outputs
    else placeholderOutputsWith placeholder2 name e);

  # Every output a placeholder: the visible output -> input edges.
  edgesMode = fix (name: e: placeholderOutputs name e);

  # Dependencies hidden in derivations (ARCHITECTURE.md, "Evaluation"), per top-level input of
  # the edges view: `drvs`, the store paths its JSON references (string context), whose .drv
  # closures the Rust side reads when they are in the store; and, unless .drv files are written
  # (then `drvs` covers it), a walk through the derivations the input holds as values (drvAttrs,
  # each derivation once): `strings`, the placeholder-holding strings of those whose .drv file is
  # not in the store, while those in the store end the walk and join `drvs`.
  hiddenEdges = inputs:
    let
      marked = s: builtins.replaceStrings [ "<ferry:unknown:" ] [ "" ] s != s;
      parts = x: # marked strings and derivations in a value, not looking inside derivations
        if isString x then (if marked x then [ { str = x; } ] else [ ])
        else if isList x then concatMap parts x
        else if !isAttrs x then [ ]
        else if (x.type or null) == "derivation" then [ { drv = x; } ]
        else if x ? outPath then [ ]
        else concatMap (n: parts x.${n}) (attrNames x);
      item = d: let key = d.drvPath or d.outPath; stored = d ? drvPath && builtins.pathExists (unsafeDiscardStringContext key); in
        { inherit key stored; ps = if stored then [ ] else parts (d.drvAttrs or { }); };
      drvsOf = concatMap (p: if p ? drv then [ (item p.drv) ] else [ ]);
      walk = v: if args.writeDrvs or false then [ ] else builtins.genericClosure { startSet = drvsOf (parts v); operator = i: drvsOf i.ps; };
      one = v:
        let
          w = walk v;
          r = {
            strings = concatMap (i: concatMap (p: if p ? str then [ (unsafeDiscardStringContext p.str) ] else [ ]) i.ps) w;
            drvs = attrNames (getContext (toJSON v)) ++ concatMap (i: if i.stored then [ (unsafeDiscardStringContext i.key) ] else [ ]) w;
          };
        in builtins.deepSeq r r;
    in mapAttrs (n: v: let r = tryEval (one v); in if r.success then r.value else null) inputs;

  # No output known at all: declarations (type, provider, tags) must not depend on outputs.
  declMode = fix (name: e: pending name);

  # ---------------------------------------------------------------- results

  jsonOrNull = x: let t = tryEval (toJSON x); in if t.success then unsafeDiscardStringContext t.value else null;

  contextOf = s: mapAttrs (p: c: c.outputs or [ ]) (removeAttrs (getContext s) (filter isMarker (attrNames (getContext s))));

  # An honest preview of one value, from two placeholder views of it (`p`, `p2`: the same
  # expression with unknown outputs spelled differently). What is equal in both depends on no
  # unknown output and is shown exactly; a plain string that differs only in the placeholders'
  # spelling shows them (`(known after apply: R.O)` once rendered); anything else computed from
  # an unknown output — a derivation or store path built from a placeholder, a value chosen by
  # comparing one — is `opaque`, never an invented value.
  opaque = "<ferry:unknown>";
  respell = builtins.replaceStrings [ "<ferry:unknown:" ] [ "<ferry:unknown2:" ];
  previewOf = p: p2:
    let
      r = tryEval p;
      r2 = tryEval p2;
      j = tryEval (toJSON p);
      j2 = tryEval (toJSON p2);
      v = r.value;
      v2 = r2.value;
    in
    if !r.success || !r2.success then opaque
    else if j.success && j2.success && j.value == j2.value then fromJSON (unsafeDiscardStringContext j.value)
    else if isAttrs v && isAttrs v2 && !(v ? outPath) && !(v2 ? outPath) && attrNames v == attrNames v2 then
      mapAttrs (k: x: previewOf x v2.${k}) v
    else if isList v && isList v2 && length v == length v2 then
      genList (i: previewOf (elemAt v i) (elemAt v2 i)) (length v)
    else if isString v && isString v2 && getContext v == { } && respell v == v2 then v
    else opaque;

  resultFor = name:
    let
      e = main.${name};
      j = jsonOf name;
      names = let r = tryEval (attrNames (e.decl.inputs or { })); in if r.success then r.value else [ ];
      pv = preview.${name}.decl.inputs or { };
      pv2 = preview2.${name}.decl.inputs or { };
      # Not ready in throw mode, but its inputs evaluate with placeholders: the throw was
      # one of ferry's (an output not known yet). Otherwise it may be the user's: the engine
      # asks again without tryEval (`probe`), which shows the first throw's message.
      # (Without placeholder views — they broke the round with an uncatchable type error —
      # every resource that is not ready is undetermined.)
      placeholderViews = args.wantPreviews || args.wantEdges;
      # Ready while no output at all is available (none settled, none recorded to lend), or
      # in the declarations' view (`isolatedOk`): its inputs were computed with every output
      # throwing, so they use none and have no edges — the edges view would only evaluate
      # them (a whole NixOS system) a second time.
      edgeless = j.success && (nothingAvailable || isolatedOk name);
      inputs = if j.success then unsafeDiscardStringContext j.value else null;
      placeholdersEvaluate = !j.success && placeholderViews && (tryEval (toJSON pv)).success;
    in
    {
      ready = j.success;
      undetermined = !j.success && !placeholdersEvaluate;
      inherit (e) file;
      inherit inputs;
      context = if j.success then contextOf j.value else { };
      stable = isStable name;
      unknownInputs = if j.success then [ ] else filter (n: !(tryEval (toJSON e.decl.inputs.${n})).success) names;
      preview =
        if j.success || !args.wantPreviews then null
        else let r = tryEval (attrNames pv); in
          if r.success then mapAttrs (n: v: jsonOrNull (previewOf v (pv2.${n} or null))) pv else null;
      edges =
        if !args.wantEdges || isStable name then null
        else if edgeless then inputs
        else jsonOrNull (edgesMode.${name}.decl.inputs or { });
      hidden =
        if !args.wantEdges || isStable name then null
        else if edgeless then { }
        else let r = tryEval (let v = edgesMode.${name}.decl.inputs or { }; in if isAttrs v then hiddenEdges v else null);
          in if r.success then r.value else null;
    };

  # `ep`: the same resource with every output a placeholder. A declaration that fails with
  # outputs pending but evaluates with placeholders depends on outputs; one that fails with
  # placeholders too is the user's error (a throw, a module-system type error), forced here
  # uncaught so Nix shows its own message.
  declOf = name: e:
    let
      d = e.decl;
      dp = edgesMode.${name}.decl;
      file = e.file;
      where = "resource `${name}` (${file})";
      str = attr: v: vp:
        let t = tryEval v;
        in if t.success then t.value
        else if (tryEval (builtins.deepSeq vp vp)).success then fail "${where}: `${attr}` must not depend on resource outputs"
        else builtins.deepSeq vp (fail "${where}: `${attr}` failed to evaluate");
      type =
        if !(d ? type) then fail "${where} has no `type`; set e.g. type = \"local.file\";"
        else let t = str "type" d.type dp.type; in
          if isString t then t else fail "${where}: `type` must be a string like \"local.file\", got ${typeOf t}";
      provider =
        let p = str "provider" (d.provider or null) (dp.provider or null); in
        if p == null then null
        else if !isAttrs p || !(p ? executable) then fail "${where}: `provider` must be { executable = ...; args = [ ]; }"
        else let
          exe = str "provider.executable" "${p.executable}" "${dp.provider.executable}";
          pargs = str "provider.args" (map (a: "${toString a}") (p.args or [ ])) (map (a: "${toString a}") (dp.provider.args or [ ]));
        in {
          executable = unsafeDiscardStringContext exe;
          args = map unsafeDiscardStringContext pargs;
          context = contextOf (exe + toString pargs);
        };
    in
    if !isAttrs d then fail "${where} must be an attribute set with `type` and `inputs`"
    else {
      inherit file type provider;
      files = e.files;
      tags = let t = str "tags" (d.tags or [ ]) (dp.tags or [ ]); in
        if isList t then t else fail "${where}: `tags` must be a list of strings";
      timeout = str "timeout" (d.timeout or null) (dp.timeout or null);
      protect = let p = str "protect" (d.protect or false) (dp.protect or false); in
        if builtins.isBool p then p else fail "${where}: `protect` must be true or false, got ${typeOf p}";
      unknownAttrs = attrNames (removeAttrs d [ "type" "inputs" "provider" "tags" "timeout" "protect" ]);
    };

  # The top-level `name` (the deployment's name, recorded in state), or null.
  deploymentName =
    let
      file = load.topFile;
      n = tryEval (load.nameWith (mapAttrs (n: e: pending n) declMode));
    in if !n.success then fail "${file}: `name` must not depend on resource outputs"
    else if n.value == null || isString n.value then n.value
    else fail "${file}: `name` must be a string, got ${typeOf n.value}";

  nothingAvailable = args.known == { } && args.recorded == { };

  pendingNames = if args.pending == null then attrNames main else filter (n: hasAttr n main) args.pending;

  # With several workers (`deferHeavy`), two or more pending resources of costly kinds (the
  # schemas' `heavy`: NixOS systems) are left to worker processes: named in `deferred`, not
  # evaluated here. A type that fails here is not deferred (its error shows in this pass).
  heavyOf = n:
    let r = tryEval (let d = declMode.${n}.decl; in
      isAttrs d && d ? type && isString d.type && (args.schemas.${d.type}.heavy or false));
    in r.success && r.value;
  heavyPending = if args.deferHeavy or false then filter heavyOf pendingNames else [ ];
  deferred = if length heavyPending >= 2 then heavyPending else [ ];
  deferredSet = listToAttrs (map (n: { name = n; value = true; }) deferred);
  evaluatedNames = if deferred == [ ] then pendingNames else filter (n: !(deferredSet ? ${n})) pendingNames;
in
if args.probe or null != null then
  # Uncaught: fails with the first throw's own message (ferry's pending marker or the user's).
  let
    inputs = main.${args.probe}.decl.inputs or { };
    input = args.probeInput or null;
  in
  if input == "" then { names = attrNames inputs; }
  else { probe = toJSON (if input == null then inputs else inputs.${input}); }
else
{
  declarations = if args.wantDeclarations then mapAttrs declOf declMode else null;
  deploymentName = if args.wantDeclarations then deploymentName else null;
  names = attrNames main;
  results = listToAttrs (map (n: { name = n; value = resultFor n; }) evaluatedNames);
  inherit deferred;
}
