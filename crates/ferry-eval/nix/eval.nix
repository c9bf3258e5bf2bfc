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
  known = args.known; # name -> outputs (settled this run)
  recorded = args.recorded; # name -> { inputs; outputs; } from state (optimistic round)
  unstable = listToAttrs (map (n: { name = n; value = true; }) args.unstable);
  schemas = args.schemas; # "provider.kind" -> { outputs = [..]; outputNamesInput = null | "x"; }
  ferry = import ./lib.nix { };

  fail = msg: abort "ferry: ${msg}";
  pending = name: throw "ferry-pending:${name}";
  placeholder = name: out: "<ferry:unknown:${name}:${out}>";

  # ---------------------------------------------------------------- modules and imports

  callModule = resources: file: m:
    let
      v = if isFunction m then m { inherit resources ferry; } else m;
    in
    if isAttrs v then v
    else fail "${file} must evaluate to an attribute set or a function returning one, got ${typeOf v}";

  modulesFor = resources:
    let
      mk = key: file: value: { inherit key file; module = callModule resources file value; };
      fromImport = parent: i: x:
        if isPath x || isString x then mk (toString x) (toString x) (import x)
        else mk "${parent.key}#imports.${toString i}" "${parent.file} (imports[${toString i}])" x;
      expand = item:
        let imps = item.module.imports or [ ];
        in if !isList imps then fail "${item.file}: `imports` must be a list"
        else genList (i: fromImport item i (elemAt imps i)) (length imps);
      items = builtins.genericClosure {
        startSet = [ (mk (toString args.file) (toString args.file) (import args.file)) ];
        operator = expand;
      };
    in items;

  declsFor = resources:
    let
      entries = concatMap
        (m:
          let rs = m.module.resources or { };
          in if !isAttrs rs then fail "${m.file}: `resources` must be an attribute set"
          else map (name: { inherit name; inherit (m) file; decl = rs.${name}; }) (attrNames rs))
        (modulesFor resources);
      byName = groupBy (e: e.name) entries;
    in mapAttrs (name: es: head es // { files = map (e: e.file) es; }) byName;

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

  placeholderOutputs = name: e:
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

  isStable = name: stable.${name} or false;
  stable = mapAttrs
    (name: r:
      !(hasAttr name unstable) && !(hasAttr name known) && hasAttr name main
      && (let j = mainJson.${name}; in j.success && fromJSON (unsafeDiscardStringContext j.value) == r.inputs))
    recorded;

  # Placeholder mode: unknown outputs become placeholder strings (preview for `ferry plan`).
  preview = fix (name: e:
    if hasAttr name known then known.${name}
    else if isStable name then recorded.${name}.outputs
    else placeholderOutputs name e);

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

  contextOf = s: mapAttrs (p: c: c.outputs or [ ]) (getContext s);

  resultFor = name:
    let
      e = main.${name};
      j = mainJson.${name};
      names = let r = tryEval (attrNames (e.decl.inputs or { })); in if r.success then r.value else [ ];
      pv = preview.${name}.decl.inputs or { };
    in
    {
      ready = j.success;
      inputs = if j.success then unsafeDiscardStringContext j.value else null;
      context = if j.success then contextOf j.value else { };
      stable = isStable name;
      unknownInputs = if j.success then [ ] else filter (n: !(tryEval (toJSON e.decl.inputs.${n})).success) names;
      preview =
        if j.success || !args.wantPreviews then null
        else let r = tryEval (attrNames pv); in
          if r.success then mapAttrs (n: v: jsonOrNull v) pv else null;
      edges =
        if !args.wantEdges || isStable name then null
        else jsonOrNull (edgesMode.${name}.decl.inputs or { });
      hidden =
        if !args.wantEdges || isStable name then null
        else let r = tryEval (let v = edgesMode.${name}.decl.inputs or { }; in if isAttrs v then hiddenEdges v else null);
          in if r.success then r.value else null;
    };

  declOf = name: e:
    let
      d = e.decl;
      file = e.file;
      where = "resource `${name}` (${file})";
      str = attr: v:
        let t = tryEval v;
        in if !t.success then fail "${where}: `${attr}` must not depend on resource outputs"
        else t.value;
      type =
        if !(d ? type) then fail "${where} has no `type`; set e.g. type = \"local.file\";"
        else let t = str "type" d.type; in
          if isString t then t else fail "${where}: `type` must be a string like \"local.file\", got ${typeOf t}";
      provider =
        if !(d ? provider) then null
        else let p = str "provider" d.provider; in
          if !isAttrs p || !(p ? executable) then fail "${where}: `provider` must be { executable = ...; args = [ ]; }"
          else let
            exe = str "provider.executable" "${p.executable}";
            pargs = str "provider.args" (map (a: "${toString a}") (p.args or [ ]));
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
      tags = let t = str "tags" (d.tags or [ ]); in
        if isList t then t else fail "${where}: `tags` must be a list of strings";
      timeout = str "timeout" (d.timeout or null);
      unknownAttrs = attrNames (removeAttrs d [ "type" "inputs" "provider" "tags" "timeout" ]);
    };

  pendingNames = if args.pending == null then attrNames main else filter (n: hasAttr n main) args.pending;
in
{
  declarations = if args.wantDeclarations then mapAttrs declOf declMode else null;
  names = attrNames main;
  results = listToAttrs (map (n: { name = n; value = resultFor n; }) pendingNames);
}
