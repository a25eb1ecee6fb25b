#!/usr/bin/env bash
# The research studies of docs/study.md, with symfw's own commands.
#
#   study/run.sh quick  [STUDY...]   # every study at toy size: < 10 minutes on 2 cores
#   study/run.sh medium [STUDY...]   # the size docs/study.md reports (~1 hour of one core)
#   study/run.sh paper  [STUDY...]   # the papers' settings (100 epochs, 5 seeds, 20k/100k events): many hours here
#
# STUDY names: fig4 fig4lr-small fig4lr-large fig6 appA appC seal seal-toy spurions resolution jets jets-top-reco jets-spurions
#              jets-symmetry-size jets-hybrid-pt jets-table jets-versus-trees
# (default: all but the fig4lr and jets ones, in that order; the jets ones need symfw[jets]: Pythia 8 + FastJet).
# Runs go to runs/study/<mode>/ (resumable: rerunning continues where it stopped); figures are
# copied to docs/study/<mode>/; each step's table is kept in runs/study/<mode>/<step>.table.txt
# and its wall time in times.txt. The same base seed (--seed 1) gives every model the same data,
# split and member seeds; the learning rate is the spec's default (1e-3) for every model, except in
# the fig4lr studies, which choose each model's on the validation split from one grid.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-quick}
shift || true
STUDIES=${*:-fig4 fig6 appA appC seal seal-toy spurions resolution}
SYMFW=${SYMFW:-.venv/bin/symfw}
case "$MODE" in
  # seal-toy (SEAL Fig. 1): events, epochs, seeds, boosts of the data (rapidity along z), the λ grid
  quick)  TOY=(1000 5 1 "0 6" 0.01) ;;&
  medium) TOY=(2000 8 2 "0 6" 0.0001,0.001,0.01) ;;&
  paper)  TOY=(20000 50 5 "0 1 2 3 4 5 6 7 8" 0.0001,0.001,0.01,0.1) ;;&
  quick)  SMALL=6000;  LARGE=10000;  EPOCHS=6;   SEEDS=2; FRACS=0.2,0.5,1.0;            DIAG=1000;  RES="0 0.2"; SLOPES="0.004"; JETS=2000; QG_JETS=2000; JET_EPOCHS=4; JET_LAMS=0.1,1; SIZE_SAMPLES="top"; NET_LRS=2e-3,4e-3; TREE_LRS=0.1,0.3 ;;
  medium) SMALL=20000; LARGE=40000;  EPOCHS=25;  SEEDS=3; FRACS=0.05,0.1,0.2,0.5,1.0; DIAG=3000;  RES="0 0.1 0.2"; SLOPES="0.002 0.004"; JETS=20000; QG_JETS=10000; JET_EPOCHS=15; JET_LAMS=0.01,0.1,1; SIZE_SAMPLES="top qg"; NET_LRS=1e-3,2e-3,4e-3,8e-3; TREE_LRS=0.03,0.1,0.3,1 ;;
  paper)  SMALL=20000; LARGE=100000; EPOCHS=100; SEEDS=5; FRACS=0.05,0.1,0.2,0.5,1.0; DIAG=10000; RES="0 0.05 0.1 0.15 0.2"; SLOPES="0.002 0.004"; JETS=100000; QG_JETS=100000; JET_EPOCHS=50; JET_LAMS=0.001,0.01,0.1,1; SIZE_SAMPLES="top qg"; NET_LRS=1e-3,2e-3,4e-3,8e-3; TREE_LRS=0.03,0.1,0.3,1 ;;
  *) echo "usage: study/run.sh quick|medium|paper [STUDY...]" >&2; exit 2 ;;
esac
OUT=runs/study/$MODE
FIG=docs/study/$MODE
mkdir -p "$OUT" "$FIG"
COMMON=(--seed 1 --seeds "$SEEDS" --epochs "$EPOCHS" --threads 1 --resume --quiet)

step() {  # step NAME CMD... : run it, keep its table and wall time, copy its PNGs
  local name=$1; shift
  echo "== $name: $*" >&2
  local t0=$SECONDS
  "$@" > "$OUT/$name.table.txt"
  echo "$name $((SECONDS - t0))" >> "$OUT/times.txt"
  cat "$OUT/$name.table.txt"
  for f in "$OUT/$name"/*.png; do [ -e "$f" ] && cp "$f" "$FIG/${name}__$(basename "$f")"; done
  return 0
}

for study in $STUDIES; do
  case "$study" in
  fig4)  # hybrid paper Fig. 4 (AUC vs epoch) and Fig. 5 (learned weight vs pT), small and large samples
    step fig4-small $SYMFW compare pfn invariant hybrid --data zmumu --events "$SMALL" "${COMMON[@]}" --out "$OUT/fig4-small"
    step fig4-large $SYMFW compare pfn invariant hybrid --data zmumu --events "$LARGE" "${COMMON[@]}" --out "$OUT/fig4-large" ;;
  fig4lr-small|fig4lr-large)  # Fig. 4 again, each model's learning rate chosen on validation from one grid
    events=$SMALL; [ "$study" = fig4lr-large ] && events=$LARGE
    step "${study/fig4lr/fig4}-lr" $SYMFW compare pfn invariant hybrid --data zmumu --events "$events" \
      --lr-grid 3e-4,1e-3,3e-3 "${COMMON[@]}" --out "$OUT/${study/fig4lr/fig4}-lr" ;;
  fig6)  # Fig. 6: AUC vs training fraction (validation and test fixed across fractions)
    step fig6-fractions $SYMFW compare pfn invariant hybrid --data zmumu --events "$LARGE" --fractions "$FRACS" \
      "${COMMON[@]}" --out "$OUT/fig6-fractions" ;;
  appA)  # Appendix A: the hybrid with its PFN subnet enlarged to the PFN's size
    step appA-large $SYMFW compare pfn hybrid-large hybrid --data zmumu --events "$LARGE" "${COMMON[@]}" --out "$OUT/appA-large" ;;
  appC)  # Appendix C: pooling alternatives on the small sample
    step appC-pooling $SYMFW compare hybrid hybrid-concat-weighted hybrid-concat-weight-input hybrid-concat-context-input \
      --data zmumu --events "$SMALL" "${COMMON[@]}" --out "$OUT/appC-pooling" ;;
  seal)  # SEAL: AUC, invariance under boosts, and pT extrapolation (train below 50 GeV)
    step seal $SYMFW compare pfn pfn-seal-group pfn-seal-infinitesimal --data zmumu --events "$SMALL" --invariance \
      "${COMMON[@]}" --out "$OUT/seal"
    step seal-invariance $SYMFW diagnose invariance "$OUT/seal" --events "$DIAG" --out "$OUT/seal-invariance" --quiet
    step seal-extrapolation $SYMFW compare pfn pfn-seal-group pfn-seal-infinitesimal --data zmumu --events "$LARGE" \
      --train-pt-max 50 "${COMMON[@]}" --out "$OUT/seal-extrapolation" ;;
  seal-toy)  # SEAL Fig. 1: regress y = P·P + (s·P)² from data boosted along z by η, the symmetry exact (ε = 0)
             # and broken by the spurion s = (0, 0, 0, 1e-3); λ of each penalty chosen on validation, equal budgets
    S=study/specs
    for case in exact broken; do
      eps=0; [ $case = broken ] && eps=1e-3
      for boost in ${TOY[3]}; do
        file=$OUT/seal-toy-$case-$boost.npz
        [ -e "$file" ] || $SYMFW data generate seal-toy --events "${TOY[0]}" --seed 1 --set "boost=$boost" \
          --set "spurion=$eps" --out "$file" --quiet > /dev/null
        step "seal-toy-$case-$boost" $SYMFW compare $S/seal-toy-pfn.toml $S/seal-toy-pfn-seal-group.toml \
          $S/seal-toy-pfn-seal-infinitesimal.toml $S/seal-toy-invariant.toml --data "$file" --lam-grid "${TOY[4]}" \
          --seed 1 --seeds "${TOY[2]}" --epochs "${TOY[1]}" --jobs 2 --threads 1 --resume --quiet \
          --out "$OUT/seal-toy-$case-$boost"
      done
    done
    .venv/bin/python study/seal_toy.py "$OUT" --boosts "${TOY[3]}" --figure "$FIG/seal-toy-fig1.png" \
      > "$OUT/seal-toy.table.md"
    cat "$OUT/seal-toy.table.md" ;;
  spurions)  # spurions vs the input method (same information), and the task's true residual symmetry
    step spurions $SYMFW compare invariant invariant-spurions invariant-input longitudinal-invariant pfn \
      --data zmumu --events "$SMALL" "${COMMON[@]}" --out "$OUT/spurions" ;;
  resolution)  # the hybrid's advantage and learned weight vs the smearing: constant σ/pT, then σ/pT growing with pT
    for res in $RES; do
      $SYMFW data generate zmumu --events "$SMALL" --seed 1 --resolution "$res" --resolution-slope 0 \
        --out "$OUT/zmumu-res$res.npz" --quiet > /dev/null
      step "resolution-$res" $SYMFW compare pfn invariant hybrid --data "$OUT/zmumu-res$res.npz" "${COMMON[@]}" \
        --out "$OUT/resolution-$res"
    done
    for slope in $SLOPES; do
      $SYMFW data generate zmumu --events "$SMALL" --seed 1 --resolution 0.05 --resolution-slope "$slope" \
        --out "$OUT/zmumu-slope$slope.npz" --quiet > /dev/null
      step "resolution-slope-$slope" $SYMFW compare pfn invariant hybrid --data "$OUT/zmumu-slope$slope.npz" \
        "${COMMON[@]}" --out "$OUT/resolution-slope-$slope"
    done ;;
  jets)  # top vs QCD jets (Pythia 8 + FastJet + the parametric detector): neural models vs boosted trees on substructure,
         # and PELICAN (the top four-momentum is the jets-top-reco study)
    JET_COMMON=(--seed 1 --seeds 2 --epochs "$JET_EPOCHS" --jobs 2 --threads 1 --resume --quiet)
    JETS_FILE=$OUT/jets-qcd-top.npz  # top = label 1, the signal
    [ -e "$JETS_FILE" ] || $SYMFW data generate jets --process qcd,top --events "$JETS" --out "$JETS_FILE" --quiet > /dev/null
    step jets-tagging $SYMFW compare pfn-jets hybrid-jets --data "$JETS_FILE" "${JET_COMMON[@]}" --out "$OUT/jets-tagging"
    .venv/bin/python study/jet_baseline.py "$JETS_FILE" --seed 1 --json "$OUT/jets-bdt.json" > "$OUT/jets-bdt.table.txt"
    cat "$OUT/jets-bdt.table.txt"
    # PELICAN costs ~10x a PFN per jet here: the same split and seeds, fewer epochs
    step jets-pelican $SYMFW train pelican-jets --data "$JETS_FILE" --seed 1 --seeds 1 \
      --epochs "$(( (JET_EPOCHS + 2) / 3 ))" --threads 2 --resume --quiet --out "$OUT/jets-pelican"
    ;;
  jets-top-reco)  # the top four-momentum from top jets: the equivariant head Σ w_i p_i (invariant w_i; SO(2)_z-
                  # invariant w_i with the beam spurions), the same head on a PFN, general networks regressing (E, p),
                  # against the jet's own four-momentum
    JET_COMMON=(--seed 1 --seeds "$SEEDS" --epochs "$JET_EPOCHS" --schedule cosine --jobs 2 --threads 1 --resume --quiet)
    JETS_FILE=$OUT/jets-qcd-top.npz
    [ -e "$JETS_FILE" ] || $SYMFW data generate jets --process qcd,top --events "$JETS" --out "$JETS_FILE" --quiet > /dev/null
    [ -e "$OUT/jets-top.npz" ] || .venv/bin/python study/select_class.py "$JETS_FILE" "$OUT/jets-top.npz" --label 1
    step jets-top-reco-cmp $SYMFW compare invariant-jets-four-vector study/specs/jets-spurions-four-vector.toml \
      pfn-jets-four-vector pfn-jets-regression hybrid-jets-regression --data "$OUT/jets-top.npz" "${JET_COMMON[@]}" --out "$OUT/jets-top-reco-cmp" ;;
  jets-spurions)  # the spurions talk on jets: spurion vs input method per residual group, matched initialisation,
                  # augmentation as the third column; top vs QCD, then quark vs gluon (quark = label 1, the signal)
    JET_COMMON=(--seed 1 --seeds "$SEEDS" --epochs "$JET_EPOCHS" --schedule cosine --jobs 2 --threads 1 --resume --quiet)
    JETS_FILE=$OUT/jets-qcd-top.npz
    [ -e "$JETS_FILE" ] || $SYMFW data generate jets --process qcd,top --events "$JETS" --out "$JETS_FILE" --quiet > /dev/null
    QG_FILE=$OUT/jets-gluon-quark.npz  # R = 0.4, jet pT 500-550 GeV (the energyflow sample's window)
    S=study/specs
    for sample in top qg; do
      file=$JETS_FILE; [ $sample = qg ] && file=$QG_FILE
      [ -e "$file" ] || $SYMFW data generate jets --process gluon,quark --events "$QG_JETS" --seed 1 \
        --set 'pt_range=[500,550]' --out "$file" --quiet > /dev/null
      step "jets-spurions-$sample-so3" $SYMFW compare invariant-jets $S/jets-spurion-time.toml $S/jets-input-E.toml \
        $S/jets-input-E-augmented.toml --matched-init --data "$file" "${JET_COMMON[@]}" --out "$OUT/jets-spurions-$sample-so3"
      step "jets-spurions-$sample-so12" $SYMFW compare invariant-jets $S/jets-spurion-beam-axis.toml $S/jets-input-pz.toml \
        $S/jets-input-pz-augmented.toml --matched-init --data "$file" "${JET_COMMON[@]}" --out "$OUT/jets-spurions-$sample-so12"
      step "jets-spurions-$sample-se2" $SYMFW compare invariant-jets $S/jets-spurion-beam-plus.toml $S/jets-input-Eminus.toml \
        $S/jets-input-Eminus-augmented.toml --matched-init --data "$file" "${JET_COMMON[@]}" --out "$OUT/jets-spurions-$sample-se2"
      step "jets-spurions-$sample-so2" $SYMFW compare invariant-jets invariant-jets-spurions invariant-jets-input \
        $S/jets-input-Epz-augmented.toml --matched-init --data "$file" "${JET_COMMON[@]}" --out "$OUT/jets-spurions-$sample-so2"
      step "jets-spurions-$sample-none" $SYMFW compare invariant-jets $S/jets-input-all.toml $S/jets-input-all-augmented.toml \
        --matched-init --data "$file" "${JET_COMMON[@]}" --out "$OUT/jets-spurions-$sample-none"
    done ;;
  jets-symmetry-size)  # "is more symmetry better at small model size?": the spurion method for every residual group
                       # (none = all components as inputs), at the spurion study's size (MLP 128;64) and small (MLP 16);
                       # quick: top jets only
    JET_COMMON=(--seed 1 --seeds "$SEEDS" --epochs "$JET_EPOCHS" --schedule cosine --jobs 2 --threads 1 --resume --quiet)
    JETS_FILE=$OUT/jets-qcd-top.npz
    [ -e "$JETS_FILE" ] || $SYMFW data generate jets --process qcd,top --events "$JETS" --out "$JETS_FILE" --quiet > /dev/null
    QG_FILE=$OUT/jets-gluon-quark.npz
    S=study/specs
    for sample in $SIZE_SAMPLES; do
      file=$JETS_FILE; [ $sample = qg ] && file=$QG_FILE
      [ -e "$file" ] || $SYMFW data generate jets --process gluon,quark --events "$QG_JETS" --seed 1 \
        --set 'pt_range=[500,550]' --out "$file" --quiet > /dev/null
      step "jets-symmetry-$sample-standard" $SYMFW compare invariant-jets $S/jets-spurion-time.toml \
        $S/jets-spurion-beam-axis.toml $S/jets-spurion-beam-plus.toml invariant-jets-spurions $S/jets-input-all.toml \
        --matched-init --data "$file" "${JET_COMMON[@]}" --out "$OUT/jets-symmetry-$sample-standard"
      step "jets-symmetry-$sample-small" $SYMFW compare $S/jets-small-lorentz.toml $S/jets-small-spurion-time.toml \
        $S/jets-small-spurion-beam-axis.toml $S/jets-small-spurion-beam-plus.toml $S/jets-small-spurion-beam.toml \
        $S/jets-small-input-all.toml --matched-init --data "$file" "${JET_COMMON[@]}" --out "$OUT/jets-symmetry-$sample-small"
    done ;;
  jets-hybrid-pt)  # the hybrid paper's question on jets, over a wide jet-pT range (300-1000 GeV: the constituents' pT, and
                   # with it the tracker's b·pT term, grow ~3x): AUC vs epoch at 10 % and 100 % of the data, the weight vs jet pT
    JET_COMMON=(--seed 1 --seeds "$SEEDS" --epochs "$JET_EPOCHS" --schedule cosine --jobs 2 --threads 1 --resume --quiet)
    WIDE_FILE=$OUT/jets-qcd-top-pt300-1000.npz
    [ -e "$WIDE_FILE" ] || $SYMFW data generate jets --process qcd,top --events "$JETS" --seed 1 \
      --set 'pt_range=[300,1000]' --out "$WIDE_FILE" --quiet > /dev/null
    step jets-hybrid-pt $SYMFW compare pfn-jets invariant-jets hybrid-jets --fractions 0.1,1.0 --data "$WIDE_FILE" \
      "${JET_COMMON[@]}" --out "$OUT/jets-hybrid-pt" ;;
  jets-table)  # every strategy on the same top-vs-QCD jets, splits and seeds (10 % and 100 % of the training split),
               # then SEAL's invariance vs boost of those models, accuracy vs pT on boosted jets, and the pT
               # extrapolation (train below 600 GeV; each penalty's λ chosen on validation from JET_LAMS, every
               # model given the same number of trainings)
    JET_COMMON=(--seed 1 --seeds "$SEEDS" --epochs "$JET_EPOCHS" --schedule cosine --jobs 2 --threads 1 --resume --quiet)
    JETS_FILE=$OUT/jets-qcd-top.npz
    [ -e "$JETS_FILE" ] || $SYMFW data generate jets --process qcd,top --events "$JETS" --out "$JETS_FILE" --quiet > /dev/null
    step jets-table $SYMFW compare pfn-jets invariant-jets invariant-jets-spurions invariant-jets-input \
      study/specs/jets-input-Epz-augmented.toml hybrid-jets pfn-jets-seal-group pfn-jets-seal-infinitesimal \
      --fractions 0.1,1.0 --data "$JETS_FILE" "${JET_COMMON[@]}" --out "$OUT/jets-table"
    # invariance of every model under boosts (raw, per unit logit spread, output-quantile shift) and under its claimed group
    step jets-seal-invariance $SYMFW diagnose invariance "$OUT/jets-table" --events "$DIAG" --rapidities 0,0.1,0.3,1 \
      --out "$OUT/jets-seal-invariance" --quiet
    step jets-seal-accuracy-pt $SYMFW diagnose pt "$OUT/jets-table" --context system-pt --events "$DIAG" \
      --rapidities 0,0.5,1 --out "$OUT/jets-seal-accuracy-pt" --quiet
    step jets-seal-extrapolation-lam $SYMFW compare pfn-jets pfn-jets-seal-group pfn-jets-seal-infinitesimal \
      --train-pt-max 600 --cut-context system-pt --lam-grid "$JET_LAMS" --data "$JETS_FILE" "${JET_COMMON[@]}" \
      --out "$OUT/jets-seal-extrapolation-lam" ;;
  jets-versus-trees)  # the jet-frame PFN against boosted trees on substructure, each with its learning rate chosen on
                      # validation from a grid of the same size (NET_LRS, TREE_LRS), five seeds voting, the paired
                      # bootstrap of AUC(vote) - AUC(trees) on the same test jets; on two independent samples (§9)
    JET_COMMON=(--seed 1 --seeds 5 --epochs "$JET_EPOCHS" --schedule cosine --jobs 2 --threads 1 --resume --quiet)
    for sample in 0 2; do
      FILE=$OUT/jets-qcd-top-sample$sample.npz
      [ -e "$FILE" ] || $SYMFW data generate jets --process qcd,top --events "$JETS" --seed "$sample" --out "$FILE" --quiet > /dev/null
      step "jets-versus-trees-$sample" $SYMFW compare pfn-jets invariant-jets --lr-grid "$NET_LRS" --data "$FILE" \
        "${JET_COMMON[@]}" --out "$OUT/jets-versus-trees-$sample"
      chosen=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["selection"]["specs"]["pfn-jets"]["run"])' \
        "$OUT/jets-versus-trees-$sample/compare.json")
      .venv/bin/python study/jet_baseline.py "$FILE" --seed 1 --lr-grid "$TREE_LRS" --versus "$OUT/jets-versus-trees-$sample/$chosen" \
        --json "$OUT/jets-versus-trees-$sample-bdt.json" > "$OUT/jets-versus-trees-$sample-bdt.table.txt"
    done ;;
  *) echo "unknown study '$study'; known: fig4 fig4lr-small fig4lr-large fig6 appA appC seal seal-toy spurions resolution jets jets-top-reco jets-spurions jets-symmetry-size jets-hybrid-pt jets-table jets-versus-trees" >&2; exit 2 ;;
  esac
done
echo "== done: tables in $OUT/*.table.txt, times in $OUT/times.txt, figures in $FIG" >&2
