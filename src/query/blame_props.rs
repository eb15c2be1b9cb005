//! Property test of blame (issue 15, "blame follows the writes"): random histories of commits,
//! by-hand edits, drift modes, rollbacks and health, recorded as the reconciler records them
//! (the planner's diff and drift functions, the recording functions of `reconcile::events`),
//! against a reference replay of the raw log that compares the manifests the generator applied.

use super::blame::{CreditWalk, blame_walk, leaves};
use crate::apply::{ObjectOutcome, Outcome};
use crate::event::{
    self, ApplyAction, Digest, Draft, Envelope, EnvelopeBody, Event, Health, ObjectApplied,
};
use crate::plan::{self, Action, ApplyReason, Drift, DriftedField};
use crate::reconcile::events;
use crate::store::Projections;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const APP: &str = "shop";

/// What a revision wants of the one Deployment: `None`, removed from the repository.
#[derive(Clone, Debug, PartialEq)]
struct Want {
    replicas: u64,
    image: String,
    /// `None`: no labels at all (adding them back is a change of the whole map).
    tier: Option<String>,
    args: Vec<String>,
}

fn manifest(w: &Want) -> Value {
    let mut m = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "web"},
        "spec": {
            "replicas": w.replicas,
            "template": {"spec": {"containers": [
                {"name": "api", "image": w.image, "args": w.args}
            ]}}
        }
    });
    if let Some(t) = &w.tier {
        m["metadata"]["labels"] = json!({ "tier": t });
    }
    m
}

fn object() -> plan::ObjectRef {
    plan::ObjectRef::from_api_version("apps/v1", "Deployment", Some("web"), "api")
}

fn blob(m: &Value) -> Digest {
    Digest::of(serde_json::to_string(m).unwrap().as_bytes())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Correct,
    Detect,
    Off,
}

/// How a drift recorded in the log ended, by the generator's own reckoning: from the values, not
/// from what the recording functions decided.
#[derive(Clone, Debug, PartialEq)]
enum End {
    PutBack(u64),
    Superseded(u64, String),
}

/// One generated history and what the reference says about it.
struct History {
    log: Vec<Envelope>,
    /// The manifest of each recorded apply, by seq.
    applied: BTreeMap<u64, Value>,
    /// Every drift recorded: (seq, path) -> how the generator expects it ended.
    drift_ends: Vec<((u64, String), Option<End>)>,
    current: Option<Value>,
    /// Drifted fields a new revision set in a pass recorded in the old format.
    old_superseded: usize,
}

struct Sim {
    rng: StdRng,
    log: Vec<Envelope>,
    applied: BTreeMap<u64, Value>,
    /// Ends recorded so far (seq, put back paths, superseded paths with their revision).
    ends: Vec<(u64, Vec<String>, Vec<String>, String)>,
    drifts: Vec<(u64, String)>,
    revisions: Vec<Option<Want>>,
    target: usize,
    pinned: bool,
    last_applied: Option<Value>,
    live: Option<Value>,
    mode: Mode,
    /// The reconciler's memory: the signature of a drift seen and left (detect mode).
    memory: Option<String>,
    /// Passes before it record as reckon did before event schema 3 (a DriftCorrected of every
    /// drifted field, superseded or not).
    upgrade_at: usize,
    passes: usize,
    old_superseded: usize,
}

impl Sim {
    fn record(&mut self, draft: Draft) -> u64 {
        let seq = self.log.len() as u64 + 1;
        self.log.push(Envelope {
            body: EnvelopeBody {
                schema: crate::event::envelope::EVENT_SCHEMA,
                seq,
                time: chrono::DateTime::from_timestamp(1_764_000_000 + seq as i64, 0).unwrap(),
                app: draft.app,
                actor: None,
                prev_hash: Digest::ZERO,
                event: draft.event,
            },
            hash: Digest::ZERO,
        });
        seq
    }

    fn rev(&self) -> String {
        crate::event::samples::sha(self.target as u64 + 1)
    }

    fn commit(&mut self) {
        let base = self.revisions.last().cloned().flatten();
        let n = self.revisions.len();
        let want = match base {
            None => Some(Want {
                replicas: 1,
                image: format!("api:{n}"),
                tier: Some("a".into()),
                args: vec!["x".into()],
            }),
            Some(_) if self.rng.random_bool(0.08) => None,
            Some(mut w) => {
                // Often the image, sometimes more, sometimes nothing of this object.
                if self.rng.random_bool(0.7) {
                    w.image = format!("api:{n}");
                }
                if self.rng.random_bool(0.3) {
                    w.replicas = self.rng.random_range(0..4);
                }
                if self.rng.random_bool(0.2) {
                    w.tier = match self.rng.random_range(0..3) {
                        0 => None,
                        _ => Some(format!("t{n}")),
                    };
                }
                if self.rng.random_bool(0.15) {
                    w.args = vec![format!("a{n}"); self.rng.random_range(1..3)];
                }
                Some(w)
            }
        };
        self.revisions.push(want);
        self.record(Draft::new(
            Some(APP),
            Event::CommitObserved(crate::event::samples::commit(
                n as u64 + 1,
                "dev@example.com",
            )),
        ));
        if !self.pinned {
            self.target = n;
        }
    }

    fn edit_by_hand(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let k = self.rng.random_range(0..1000u32);
        match self.rng.random_range(0..6) {
            0 | 1 => {
                live["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!(format!("hand:{k}"))
            }
            2 => live["spec"]["replicas"] = json!(100 + k),
            3 if live["metadata"].get("labels").is_some() => {
                live["metadata"]["labels"]["tier"] = json!(format!("h{k}"))
            }
            4 => live["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["hand"]),
            _ => self.live = None,
        }
    }

    fn pass(&mut self) {
        self.passes += 1;
        let old_format = self.passes <= self.upgrade_at;
        let revision = self.rev();
        let desired = self.revisions[self.target].as_ref().map(manifest);
        let Some(la) = self.last_applied.clone() else {
            if let Some(d) = desired {
                // (Re-)created: a new life of the object.
                self.apply(
                    &revision,
                    &d,
                    Outcome::Created,
                    ApplyReason::New,
                    None,
                    old_format,
                );
            }
            return;
        };
        let Some(d) = desired else {
            self.record(Draft::new(
                Some(APP),
                Event::ObjectPruned(event::ObjectPruned {
                    revision,
                    object: event::ObjectRef::new(object()),
                }),
            ));
            self.last_applied = None;
            self.live = None;
            self.memory = None;
            return;
        };
        let drift = match (self.mode, &self.live) {
            (Mode::Off, _) => None,
            (_, None) => Some(Drift::Deleted),
            (_, Some(live)) => {
                let fields: Vec<DriftedField> = plan::drifted_fields(&la, live, &[])
                    .into_iter()
                    .map(|change| DriftedField {
                        change,
                        owners: vec![],
                    })
                    .collect();
                (!fields.is_empty()).then_some(Drift::Modified(fields))
            }
        };
        let desired_changed = d != la;
        let reapply = desired_changed || (drift.is_some() && self.mode == Mode::Correct);
        let mut recorded_drift = None;
        if let Some(drift) = &drift {
            let signature = events::drift_signature(drift);
            let seen = self.memory.as_ref() == Some(&signature);
            self.memory = (!reapply).then_some(signature);
            if !seen {
                let seq = self.record(events::drift_detected(APP, &object(), drift));
                for f in events::drift_fields(drift) {
                    self.drifts.push((seq, f));
                }
                recorded_drift = Some(drift.clone());
            }
        } else {
            self.memory = None;
        }
        if !reapply {
            return;
        }
        let reason = if desired_changed {
            ApplyReason::DesiredChanged
        } else {
            ApplyReason::DriftCorrection
        };
        let outcome = if self.live.is_none() {
            Outcome::Created
        } else {
            Outcome::Configured {
                changed: if desired_changed {
                    plan::changed_fields(&la, &d)
                } else {
                    match &drift {
                        Some(Drift::Modified(fields)) => {
                            fields.iter().map(|f| f.change.clone()).collect()
                        }
                        _ => vec![],
                    }
                },
            }
        };
        self.apply(&revision, &d, outcome, reason, recorded_drift, old_format);
    }

    fn apply(
        &mut self,
        revision: &str,
        d: &Value,
        outcome: Outcome,
        reason: ApplyReason,
        drift: Option<Drift>,
        old_format: bool,
    ) {
        let action = match &outcome {
            Outcome::Configured { changed } => Action::Configure {
                object: object(),
                manifest: crate::render::Manifest::new(d.clone()),
                digest: Digest::ZERO,
                changed: changed.clone(),
                reason: reason.clone(),
            },
            _ => Action::Create {
                object: object(),
                manifest: crate::render::Manifest::new(d.clone()),
                digest: Digest::ZERO,
                reason: reason.clone(),
            },
        };
        let done = ObjectOutcome {
            object: object(),
            outcome,
            digest: None,
            reason: Some(reason),
            resource_version: None,
            uid: None,
        };
        let draft = events::outcome_draft(APP, revision, &done, Some(blob(d))).unwrap();
        let seq = self.record(draft);
        self.applied.insert(seq, d.clone());
        if let Some(drift) = drift {
            // The generator's own reckoning of each drifted field's end, from the values: a
            // field the apply wrote a value other than the last applied one was superseded.
            let la = self.last_applied.clone().unwrap_or(Value::Null);
            let (mut put_back, mut superseded) = (vec![], vec![]);
            for f in events::drift_fields(&drift) {
                let new_value = !f.is_empty() && la.pointer(&f) != d.pointer(&f);
                if new_value && old_format {
                    self.old_superseded += 1;
                }
                if new_value && !old_format {
                    superseded.push(f);
                } else {
                    put_back.push(f);
                }
            }
            let drafts = if old_format {
                vec![Draft::new(
                    Some(APP),
                    Event::DriftCorrected(event::DriftCorrected {
                        revision: revision.to_string(),
                        object: event::ObjectRef::new(object()),
                        fields: events::drift_fields(&drift),
                    }),
                )]
            } else {
                events::drift_ended(APP, revision, &object(), &drift, &action)
            };
            let first = self.log.len() as u64 + 1;
            for draft in drafts {
                self.record(draft);
            }
            self.ends
                .push((first, put_back, superseded, revision.to_string()));
        }
        self.last_applied = Some(d.clone());
        self.live = Some(d.clone());
    }

    fn health(&mut self) {
        let to =
            [Health::Progressing, Health::Healthy, Health::Degraded][self.rng.random_range(0..3)];
        self.record(events::health_changed(
            APP,
            Some(&object()),
            Health::Unknown,
            to,
            None,
        ));
    }
}

fn generate(seed: u64) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let steps = rng.random_range(5..60);
    let upgrade_at = if rng.random_bool(0.5) {
        rng.random_range(0..steps)
    } else {
        0
    };
    let mut sim = Sim {
        rng,
        log: vec![],
        applied: BTreeMap::new(),
        ends: vec![],
        drifts: vec![],
        revisions: vec![],
        target: 0,
        pinned: false,
        last_applied: None,
        live: None,
        mode: Mode::Correct,
        memory: None,
        upgrade_at,
        passes: 0,
        old_superseded: 0,
    };
    sim.commit();
    sim.pass();
    for _ in 0..steps {
        match sim.rng.random_range(0..20) {
            0..=3 => {
                sim.commit();
                sim.pass();
            }
            // A commit and a by-hand edit found in the same pass: the case of issue 15.
            4..=6 => {
                sim.edit_by_hand();
                sim.commit();
                sim.pass();
            }
            7..=9 => {
                sim.edit_by_hand();
                sim.pass();
            }
            10 => {
                sim.mode = [Mode::Correct, Mode::Detect, Mode::Off][sim.rng.random_range(0..3)];
            }
            // Rollback to an older revision (pins the App), or resume following the branch.
            11 => {
                sim.target = sim.rng.random_range(0..sim.revisions.len());
                sim.pinned = true;
                sim.pass();
            }
            12 => {
                sim.pinned = false;
                sim.target = sim.revisions.len() - 1;
                sim.pass();
            }
            13 | 14 => sim.health(),
            _ => sim.pass(),
        }
    }
    // Blame needs an object that is there: end on a revision that has it.
    if sim.last_applied.is_none() {
        if sim.revisions[sim.target].is_none() {
            sim.pinned = false;
            sim.commit();
        }
        sim.pass();
    }
    let drift_ends = sim
        .drifts
        .iter()
        .map(|(seq, path)| {
            let end = sim.ends.iter().filter(|e| e.0 > *seq).find_map(
                |(end_seq, put_back, superseded, rev)| {
                    let lists = |fs: &[String]| fs.iter().any(|f| f == path || f.is_empty());
                    if lists(put_back) {
                        Some(End::PutBack(*end_seq))
                    } else if lists(superseded) {
                        Some(End::Superseded(*end_seq, rev.clone()))
                    } else {
                        None
                    }
                },
            );
            ((*seq, path.clone()), end)
        })
        .collect();
    History {
        log: sim.log,
        applied: sim.applied,
        drift_ends,
        current: sim.last_applied,
        old_superseded: sim.old_superseded,
    }
}

/// The reference: replays the log oldest first and credits each field to the last apply that
/// changed its value (every field to a creation), comparing the applied manifests.
fn reference(h: &History) -> BTreeMap<String, (u64, String)> {
    let mut credit: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut prev: Option<BTreeMap<String, Value>> = None;
    for env in &h.log {
        match &env.body.event {
            Event::ObjectApplied(a) => {
                let mut now = BTreeMap::new();
                leaves(&h.applied[&env.body.seq], String::new(), &mut now);
                for (path, value) in &now {
                    let changed = a.action == ApplyAction::Created
                        || prev.as_ref().is_none_or(|p| p.get(path) != Some(value));
                    if changed {
                        credit.insert(path.clone(), (env.body.seq, a.revision.clone()));
                    }
                }
                // A field the manifest no longer has is no longer blamed.
                credit.retain(|path, _| now.contains_key(path));
                prev = Some(now);
            }
            Event::ObjectPruned(_) => {
                prev = None;
                credit.clear();
            }
            _ => {}
        }
    }
    credit
}

/// [`super::blame::credits`]'s early stop, over the log instead of the store: the apply that
/// began the object's life and the fields changed since come from the projections, as there.
fn early_stop_credits(
    h: &History,
    projections: &Projections,
    fields: Vec<String>,
) -> BTreeMap<String, (u64, String)> {
    let entry = &projections.apps[APP].inventory[&event::ObjectRef::new(object()).identity()];
    let lifecycle = entry.lifecycle_seq.map(|seq| {
        let env = &h.log[seq as usize - 1];
        let Event::ObjectApplied(a) = &env.body.event else {
            panic!("lifecycle {seq} is not an apply")
        };
        (seq, env.body.time, a.revision.clone())
    });
    let mut walk = CreditWalk::new(fields);
    for env in h.log.iter().rev() {
        if lifecycle.as_ref().is_some_and(|l| env.body.seq < l.0) {
            break;
        }
        walk.step(env);
        if lifecycle.is_some() && walk.settled(&entry.changed_since) {
            break;
        }
    }
    walk.finish(lifecycle)
        .0
        .into_iter()
        .map(|(f, s)| (f, (s.0, s.2)))
        .collect()
}

#[test]
fn blame_credits_the_apply_that_wrote_each_value_in_random_histories() {
    let (mut superseded, mut old_format, mut cases) = (0, 0, 0);
    for seed in 0..400u64 {
        let h = generate(seed);
        let current = h.current.clone().unwrap();
        let walked = blame_walk(&h.log, &current, None);
        let want = reference(&h);
        let got: BTreeMap<String, (u64, String)> = walked
            .fields
            .iter()
            .map(|f| {
                let s = f
                    .set_by
                    .clone()
                    .unwrap_or_else(|| panic!("seed {seed}: {}", f.path));
                (f.path.clone(), (s.0, s.2))
            })
            .collect();
        assert_eq!(got, want, "seed {seed}: credits");
        let mut projections = Projections::default();
        for env in &h.log {
            projections.fold(&env.body);
        }
        assert_eq!(
            early_stop_credits(&h, &projections, got.keys().cloned().collect()),
            want,
            "seed {seed}: the early-stopping walk"
        );
        // Revisions: every revision an apply of the object was recorded for counts it changed,
        // a revision that superseded a drift too (DriftSuperseded changes no projection).
        let revisions = &projections.apps[APP].revisions;
        for env in &h.log {
            if let Event::ObjectApplied(ObjectApplied { revision, .. })
            | Event::DriftSuperseded(event::DriftSuperseded { revision, .. }) = &env.body.event
            {
                assert!(
                    revisions[revision].objects_changed >= 1,
                    "seed {seed}: revision {revision} lists no change"
                );
            }
        }
        // How each drift ended.
        let listed = super::blame::drift_list(&h.log);
        assert_eq!(listed.len(), h.drift_ends.len(), "seed {seed}");
        for (d, ((seq, path), end)) in listed.iter().zip(&h.drift_ends) {
            assert_eq!((d.seq, &d.path), (*seq, path), "seed {seed}");
            let got = match (d.corrected_seq, &d.superseded_by, d.superseded_seq) {
                (Some(s), None, None) => Some(End::PutBack(s)),
                (None, Some(rev), Some(s)) => Some(End::Superseded(s, rev.clone())),
                (None, None, None) => None,
                other => panic!("seed {seed}: both ends {other:?}"),
            };
            assert_eq!(d.corrected, matches!(got, Some(End::PutBack(_))));
            // A put back and a supersession of the same pass are recorded one after the other.
            let same = match (&got, end) {
                (Some(End::PutBack(a)), Some(End::PutBack(b))) => a.abs_diff(*b) <= 1,
                (Some(End::Superseded(a, r)), Some(End::Superseded(b, q))) => {
                    a.abs_diff(*b) <= 1 && r == q
                }
                (None, None) => true,
                _ => false,
            };
            assert!(
                same,
                "seed {seed}: drift {seq} {path}: {got:?}, expected {end:?}"
            );
            superseded += matches!(end, Some(End::Superseded(..))) as usize;
        }
        old_format += h.old_superseded;
        cases += 1;
    }
    // The generator must produce the cases that matter.
    assert!(
        superseded > 50,
        "only {superseded} superseded drifts in {cases} cases"
    );
    assert!(
        old_format > 50,
        "only {old_format} superseded drifts recorded as corrected (old logs)"
    );
}
