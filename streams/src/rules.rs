//! The image stream rules as pure functions over one stream held in memory ([`StreamState`]): how an event goes
//! on top of a tag's history ([`add_event`]), how tracking tags follow the tag they track ([`propagate`]), and
//! what a new spec does to generations and to the status ([`apply_spec`]): permanent tags copy what their source
//! points at now, tracking tags (an `ImageStreamTag` of the same stream) follow it, `reference` tags point at an
//! external pull spec, and tagging an image already in a history puts it on top again (rollback). The service
//! loads and stores; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use names::{Digest, RepositoryName, TagName};

use crate::model::{ImageStream, NamedTagEventList, TagEvent, TagReference};
use crate::refs::TagSource;

/// `referencePolicy.type` values.
pub const REFERENCE_SOURCE: &str = "Source";
pub const REFERENCE_LOCAL: &str = "Local";

/// One stream in memory: metadata and spec, and the histories of its tags (by tag).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamState {
    pub repo: RepositoryName,
    pub stream: ImageStream,
    pub histories: BTreeMap<TagName, NamedTagEventList>,
}

impl StreamState {
    /// What `tag` points at now.
    pub fn current(&self, tag: &TagName) -> Option<&TagEvent> {
        self.histories.get(tag).and_then(|h| h.items.first())
    }

    /// Every digest in the histories that `id` names, each once, in order of first appearance.
    pub fn images_matching(&self, matches: impl Fn(&Digest) -> bool) -> Vec<(Digest, &TagEvent)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for h in self.histories.values() {
            for e in &h.items {
                if let Some(d) = &e.image {
                    if matches(d) && seen.insert(d.clone()) {
                        out.push((d.clone(), e));
                    }
                }
            }
        }
        out
    }
}

/// The spec tags of `stream` that track `tag` (an `ImageStreamTag` of the same stream naming it).
pub fn trackers_of<'a>(repo: &'a RepositoryName, stream: &'a ImageStream, tag: &'a TagName) -> Vec<TagName> {
    stream
        .spec
        .tags
        .iter()
        .filter(|t| t.name != tag.as_str())
        .filter(|t| {
            t.from.as_ref().and_then(|f| TagSource::parse(f).ok()).is_some_and(|s| s.tracked_tag(repo) == Some(tag))
        })
        .filter_map(|t| t.name.parse().ok())
        .collect()
}

/// `tag` and every tag that tracks it, directly or through other tracking tags.
pub fn tracking_closure(repo: &RepositoryName, stream: &ImageStream, tag: &TagName) -> BTreeSet<TagName> {
    let mut seen = BTreeSet::from([tag.clone()]);
    let mut queue = VecDeque::from([tag.clone()]);
    while let Some(t) = queue.pop_front() {
        for next in trackers_of(repo, stream, &t) {
            if seen.insert(next.clone()) {
                queue.push_back(next);
            }
        }
    }
    seen
}

/// Puts `next` on top of a tag's history, as OpenShift does: the same image and reference on top only updates
/// the generation; anything else becomes the new top, the older events staying below it (so tagging an image
/// from further down the history makes it current again). Returns whether the history changed.
pub fn add_event(history: &mut NamedTagEventList, next: TagEvent) -> bool {
    let Some(top) = history.items.first_mut() else {
        history.items.push(next);
        history.conditions.clear();
        return true;
    };
    let same_image = top.image == next.image;
    let same_ref = top.docker_image_reference == next.docker_image_reference;
    match (same_image, same_ref) {
        (true, true) if top.generation == next.generation => return false,
        (true, true) => top.generation = next.generation,
        // The same image under another pull spec (a copy from another stream): keep the event, newest spec.
        (true, false) if top.image.is_some() => {
            top.docker_image_reference = next.docker_image_reference;
            top.generation = next.generation;
        }
        _ => history.items.insert(0, next),
    }
    history.conditions.clear();
    true
}

fn empty_history(tag: &TagName) -> NamedTagEventList {
    NamedTagEventList { tag: tag.to_string(), items: Vec::new(), conditions: Vec::new() }
}

/// Adds `event` to `tag` and moves every tracking tag along. Returns the tags whose history changed.
pub fn tag_event(state: &mut StreamState, tag: &TagName, event: TagEvent) -> Vec<TagName> {
    let history = state.histories.entry(tag.clone()).or_insert_with(|| empty_history(tag));
    if !add_event(history, event) {
        return Vec::new();
    }
    let mut changed = vec![tag.clone()];
    changed.extend(propagate(state, tag));
    changed
}

/// Moves every tag tracking `tag` (transitively) to what `tag` points at now. Returns the tags changed.
pub fn propagate(state: &mut StreamState, tag: &TagName) -> Vec<TagName> {
    let mut changed = Vec::new();
    let mut seen = BTreeSet::from([tag.clone()]);
    let mut queue = VecDeque::from([tag.clone()]);
    while let Some(source) = queue.pop_front() {
        let Some(event) = state.current(&source).cloned() else { continue };
        for tracker in trackers_of(&state.repo, &state.stream, &source) {
            if !seen.insert(tracker.clone()) {
                continue;
            }
            let history = state.histories.entry(tracker.clone()).or_insert_with(|| empty_history(&tracker));
            if add_event(history, event.clone()) {
                changed.push(tracker.clone());
                queue.push_back(tracker);
            }
        }
    }
    changed
}

/// What applying a spec did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SpecOutcome {
    /// Tags whose history changed.
    pub changed: Vec<TagName>,
    /// Images now tagged here from another stream: `(source stream, digest)`; their manifests and blobs must be
    /// linked into this repository.
    pub copies: Vec<(RepositoryName, Digest)>,
}

/// Why a spec was refused (Kubernetes `Invalid`); the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks what a spec says before anything is applied: tag names, sources, reference policies, no duplicates.
pub fn validate_spec(stream: &ImageStream) -> Result<(), Invalid> {
    let mut names = BTreeSet::new();
    for (i, t) in stream.spec.tags.iter().enumerate() {
        let field = format!("spec.tags[{i}]");
        let tag: TagName = t.name.parse().map_err(|e| Invalid(format!("{field}.name: {e}")))?;
        if !names.insert(tag) {
            return Err(Invalid(format!("{field}.name: duplicate tag {:?}", t.name)));
        }
        if let Some(from) = &t.from {
            TagSource::parse(from).map_err(|e| Invalid(format!("{field}.from: {e}")))?;
        }
        let policy = t.reference_policy.kind.as_str();
        if policy != REFERENCE_SOURCE && policy != REFERENCE_LOCAL {
            return Err(Invalid(format!(
                "{field}.referencePolicy.type: {policy:?} is not {REFERENCE_SOURCE} or {REFERENCE_LOCAL}"
            )));
        }
        if t.generation.is_some_and(|g| g < 0) {
            return Err(Invalid(format!("{field}.generation: must not be negative")));
        }
    }
    Ok(())
}

/// The stream each spec tag's source names, other than `repo` itself: what [`apply_spec`] needs loaded.
pub fn other_sources(repo: &RepositoryName, stream: &ImageStream) -> BTreeSet<RepositoryName> {
    stream
        .spec
        .tags
        .iter()
        .filter_map(|t| t.from.as_ref().and_then(|f| TagSource::parse(f).ok()))
        .filter_map(|s| s.repository(repo))
        .filter(|r| r != repo)
        .collect()
}

fn same_ignoring_generation(a: &TagReference, b: &TagReference) -> bool {
    let mut a = a.clone();
    a.generation = b.generation;
    &a == b
}

/// Applies the spec now in `state.stream` over the stored stream `old` (`None` when the stream is being
/// created), as OpenShift does:
/// - `metadata.generation` is 1 for a new stream and goes up by one on every spec change (labels, annotations
///   and status do not count);
/// - a spec tag's `generation` is the stream generation at which it last changed, and users cannot set it
///   (except to 0, which asks for the tag to be applied again);
/// - every new or changed tag with a source puts the source's image on top of its history, and the tags
///   tracking it follow; tags removed from the spec keep their history (only deleting the image stream tag
///   removes that).
///
/// `others` holds the other streams the spec names as sources (see [`other_sources`]).
pub fn apply_spec(
    old: Option<&ImageStream>,
    state: &mut StreamState,
    others: &BTreeMap<RepositoryName, StreamState>,
    now: DateTime<Utc>,
) -> Result<SpecOutcome, Invalid> {
    validate_spec(&state.stream)?;
    let old_tags: BTreeMap<&str, &TagReference> =
        old.map(|o| o.spec.tags.iter().map(|t| (t.name.as_str(), t)).collect()).unwrap_or_default();
    // Generations users sent are not theirs to set: keep the stored ones, note forced and changed tags.
    let mut changed_tags = Vec::new();
    for t in &mut state.stream.spec.tags {
        let forced = t.generation == Some(0);
        match old_tags.get(t.name.as_str()) {
            Some(o) if !forced => {
                t.generation = o.generation;
                if !same_ignoring_generation(t, o) {
                    changed_tags.push(t.name.clone());
                }
            }
            _ => changed_tags.push(t.name.clone()),
        }
    }
    let generation = match old {
        None => 1,
        Some(o) => {
            let previous = o.metadata.generation.unwrap_or(1);
            if o.spec != state.stream.spec || !changed_tags.is_empty() {
                previous + 1
            } else {
                previous
            }
        }
    };
    state.stream.metadata.generation = Some(generation);
    let mut outcome = SpecOutcome::default();
    for name in changed_tags {
        let Some(spec_tag) = state.stream.spec.tags.iter_mut().find(|t| t.name == name) else { continue };
        spec_tag.generation = Some(generation);
        let spec_tag = spec_tag.clone();
        let tag: TagName = name.parse().map_err(|e| Invalid(format!("spec.tags: {e}")))?;
        let Some(from) = &spec_tag.from else { continue };
        let source = TagSource::parse(from).map_err(|e| Invalid(format!("spec.tags[{name}].from: {e}")))?;
        let Some((event, copy)) = source_event(state, others, &tag, &spec_tag, &source, generation, now)? else {
            continue;
        };
        if let Some(copy) = copy {
            outcome.copies.push(copy);
        }
        for t in tag_event(state, &tag, event) {
            if !outcome.changed.contains(&t) {
                outcome.changed.push(t);
            }
        }
    }
    Ok(outcome)
}

/// The event a changed spec tag puts on its history, and the image to link in when it comes from another
/// stream. `None`: nothing to tag now (an external image waiting for import, or a tracked tag with no image yet).
#[allow(clippy::type_complexity)]
fn source_event(
    state: &StreamState,
    others: &BTreeMap<RepositoryName, StreamState>,
    tag: &TagName,
    spec_tag: &TagReference,
    source: &TagSource,
    generation: i64,
    now: DateTime<Utc>,
) -> Result<Option<(TagEvent, Option<(RepositoryName, Digest)>)>, Invalid> {
    let event = |reference: String, image: Option<Digest>| TagEvent {
        created: now,
        docker_image_reference: reference,
        image,
        generation,
        by: crate::actor::current(),
    };
    let field = format!("spec.tags[{tag}].from");
    let source_repo = source.repository(&state.repo);
    let source_state = match &source_repo {
        Some(r) if r == &state.repo => Some(state),
        Some(r) => Some(others.get(r).ok_or_else(|| Invalid(format!("{field}: image stream {r} not found")))?),
        None => None,
    };
    let copy_of = |d: &Option<Digest>| match (&source_repo, d) {
        (Some(r), Some(d)) if r != &state.repo => Some((r.clone(), d.clone())),
        _ => None,
    };
    match (source, source_state) {
        (TagSource::DockerImage(pull_spec), _) => {
            // Only a reference tag points at the external image now; others wait for an import.
            Ok(spec_tag.reference.then(|| (event(pull_spec.clone(), TagSource::pinned_digest(pull_spec)), None)))
        }
        (TagSource::Tag { tag: source_tag, .. }, Some(src)) => {
            if src.repo == state.repo && source_tag == tag {
                return Err(Invalid(format!("{field}: tag {tag} cannot track itself")));
            }
            match src.current(source_tag) {
                Some(e) => Ok(Some((event(e.docker_image_reference.clone(), e.image.clone()), copy_of(&e.image)))),
                None if src.repo == state.repo => Ok(None),
                None => Err(Invalid(format!("{field}: image stream tag {}:{source_tag} not found", src.repo))),
            }
        }
        (TagSource::Image { id, .. }, Some(src)) => {
            let matches = src.images_matching(|d| id.matches(d));
            match matches.as_slice() {
                [(digest, e)] => Ok(Some((
                    event(e.docker_image_reference.clone(), Some(digest.clone())),
                    copy_of(&Some(digest.clone())),
                ))),
                [] => Err(Invalid(format!("{field}: image {id} not found in image stream {}", src.repo))),
                _ => Err(Invalid(format!("{field}: {id} names more than one image of {}", src.repo))),
            }
        }
        (TagSource::Tag { .. } | TagSource::Image { .. }, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectMeta, ObjectReference, TagReferencePolicy};

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn ev(img: &str, generation: i64) -> TagEvent {
        TagEvent {
            created: Utc::now(),
            docker_image_reference: format!("h/ns/app@{}", d(img)),
            image: Some(d(img)),
            generation,
            by: None,
        }
    }

    fn state() -> StreamState {
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let stream = ImageStream {
            metadata: ObjectMeta { name: "app".into(), generation: Some(1), ..ObjectMeta::default() },
            ..ImageStream::default()
        };
        StreamState { repo, stream, histories: BTreeMap::new() }
    }

    fn tag(s: &str) -> TagName {
        s.parse().unwrap()
    }

    fn spec_tag(name: &str, kind: &str, from: &str) -> TagReference {
        TagReference {
            name: name.into(),
            from: Some(ObjectReference { kind: kind.into(), name: from.into(), namespace: None }),
            reference_policy: TagReferencePolicy::default(),
            ..TagReference::default()
        }
    }

    fn top(s: &StreamState, t: &str) -> Option<Digest> {
        s.current(&tag(t)).and_then(|e| e.image.clone())
    }

    fn history(s: &StreamState, t: &str) -> Vec<Digest> {
        s.histories[&tag(t)].items.iter().filter_map(|e| e.image.clone()).collect()
    }

    #[test]
    fn history_is_a_stack_and_rollback_puts_old_images_on_top() {
        let mut h = NamedTagEventList { tag: "v1".into(), items: vec![], conditions: vec![] };
        assert!(add_event(&mut h, ev("a", 1)));
        assert!(!add_event(&mut h, ev("a", 1)), "the same event again changes nothing");
        assert!(add_event(&mut h, ev("a", 2)), "a new generation is recorded in place");
        assert_eq!((h.items.len(), h.items[0].generation), (1, 2));
        assert!(add_event(&mut h, ev("b", 2)));
        assert!(add_event(&mut h, ev("a", 3)));
        let order: Vec<_> = h.items.iter().map(|e| e.image.clone().unwrap()).collect();
        assert_eq!(order, vec![d("a"), d("b"), d("a")]);
    }

    #[test]
    fn generations_follow_openshift() {
        let mut s = state();
        let old = s.stream.clone();
        s.stream.spec.tags.push(spec_tag("ext", "DockerImage", "docker.io/library/busybox:1"));
        s.stream.spec.tags[0].generation = Some(99);
        apply_spec(Some(&old), &mut s, &BTreeMap::new(), Utc::now()).unwrap();
        assert_eq!(s.stream.metadata.generation, Some(2));
        assert_eq!(s.stream.spec.tags[0].generation, Some(2), "users cannot set a tag's generation");
        assert!(s.histories.is_empty(), "a DockerImage tag that is not a reference waits for an import");
        // The same spec again: nothing moves. Labels do not count.
        let old = s.stream.clone();
        s.stream.metadata.labels.insert("a".into(), "b".into());
        apply_spec(Some(&old), &mut s, &BTreeMap::new(), Utc::now()).unwrap();
        assert_eq!(s.stream.metadata.generation, Some(2));
        // A new tag bumps the stream, leaves the old tag's generation.
        let old = s.stream.clone();
        s.stream.spec.tags.push(spec_tag("ref", "DockerImage", &format!("quay.io/x/y@{}", d("q"))));
        s.stream.spec.tags[1].reference = true;
        apply_spec(Some(&old), &mut s, &BTreeMap::new(), Utc::now()).unwrap();
        assert_eq!(s.stream.metadata.generation, Some(3));
        assert_eq!(s.stream.spec.tags[0].generation, Some(2));
        assert_eq!(s.stream.spec.tags[1].generation, Some(3));
        let e = s.current(&tag("ref")).unwrap();
        assert_eq!((e.image.clone(), e.generation), (Some(d("q")), 3));
        // lookupPolicy is spec too.
        let old = s.stream.clone();
        s.stream.spec.lookup_policy.local = true;
        apply_spec(Some(&old), &mut s, &BTreeMap::new(), Utc::now()).unwrap();
        assert_eq!(s.stream.metadata.generation, Some(4));
        // Creation: generation 1 whatever was sent.
        let mut fresh = state();
        fresh.stream.metadata.generation = Some(7);
        apply_spec(None, &mut fresh, &BTreeMap::new(), Utc::now()).unwrap();
        assert_eq!(fresh.stream.metadata.generation, Some(1));
    }

    #[test]
    fn permanent_copies_tracking_follows() {
        let mut s = state();
        s.histories
            .insert(tag("2.0"), NamedTagEventList { tag: "2.0".into(), items: vec![ev("a", 1)], conditions: vec![] });
        let old = s.stream.clone();
        s.stream.spec.tags.push(spec_tag("static", "ImageStreamImage", &format!("app@{}", &d("a").hex()[..7])));
        s.stream.spec.tags.push(spec_tag("latest", "ImageStreamTag", "app:2.0"));
        s.stream.spec.tags.push(spec_tag("stable", "ImageStreamTag", "latest"));
        let out = apply_spec(Some(&old), &mut s, &BTreeMap::new(), Utc::now()).unwrap();
        assert_eq!(out.changed.len(), 3);
        for t in ["static", "latest", "stable"] {
            assert_eq!(top(&s, t), Some(d("a")), "{t}");
        }
        // 2.0 moves: latest and (through it) stable follow, static stays.
        let changed = tag_event(&mut s, &tag("2.0"), ev("b", 2));
        assert_eq!(changed, vec![tag("2.0"), tag("latest"), tag("stable")]);
        assert_eq!(top(&s, "static"), Some(d("a")));
        assert_eq!(history(&s, "stable"), vec![d("b"), d("a")]);
        assert_eq!(
            tracking_closure(&s.repo, &s.stream, &tag("2.0")),
            BTreeSet::from([tag("2.0"), tag("latest"), tag("stable")])
        );
        // Rollback: tag the old image again.
        let old = s.stream.clone();
        s.stream.spec.tags.push(spec_tag("2.0", "ImageStreamImage", &format!("app@{}", d("a"))));
        apply_spec(Some(&old), &mut s, &BTreeMap::new(), Utc::now()).unwrap();
        assert_eq!(history(&s, "2.0"), vec![d("a"), d("b"), d("a")]);
        assert_eq!(top(&s, "stable"), Some(d("a")));
    }

    #[test]
    fn bad_specs_are_invalid() {
        let cases = [
            spec_tag("Bad Name", "DockerImage", "x"),
            spec_tag("t", "Pod", "x"),
            spec_tag("t", "ImageStreamTag", "t"),
            spec_tag("t", "ImageStreamImage", &format!("app@{}", d("nope"))),
            spec_tag("t", "ImageStreamTag", "other:v1"),
        ];
        for c in cases {
            let mut s = state();
            let old = s.stream.clone();
            s.stream.spec.tags.push(c.clone());
            assert!(apply_spec(Some(&old), &mut s, &BTreeMap::new(), Utc::now()).is_err(), "{c:?}");
        }
        let mut s = state();
        s.stream.spec.tags = vec![spec_tag("t", "DockerImage", "x"), spec_tag("t", "DockerImage", "y")];
        assert!(validate_spec(&s.stream).is_err());
        s.stream.spec.tags.pop();
        s.stream.spec.tags[0].reference_policy.kind = "Sometimes".into();
        assert!(validate_spec(&s.stream).is_err());
    }

    #[test]
    fn ambiguous_prefixes_are_refused_and_other_streams_are_copied() {
        let mut other = state();
        other.repo = "ns/base".parse().unwrap();
        // Two images whose hex starts alike cannot be named by their common prefix.
        let first = d("x").hex().chars().next().unwrap();
        let twin = (0..).map(|i| format!("twin{i}")).find(|s| d(s).hex().starts_with(first)).unwrap();
        other.histories.insert(
            tag("a"),
            NamedTagEventList { tag: "a".into(), items: vec![ev("x", 1), ev(&twin, 1)], conditions: vec![] },
        );
        let others = BTreeMap::from([(other.repo.clone(), other.clone())]);
        let mut s = state();
        let old = s.stream.clone();
        s.stream.spec.tags.push(spec_tag("t", "ImageStreamTag", "base:a"));
        assert_eq!(other_sources(&s.repo, &s.stream), BTreeSet::from([other.repo.clone()]));
        let out = apply_spec(Some(&old), &mut s, &others, Utc::now()).unwrap();
        assert_eq!(out.copies, vec![(other.repo.clone(), d("x"))]);
        assert_eq!(top(&s, "t"), Some(d("x")));
        // Tracking another stream is not possible: the tag was copied and stays put.
        assert!(trackers_of(&s.repo, &s.stream, &tag("a")).is_empty());
        let mut s2 = state();
        let old = s2.stream.clone();
        s2.stream.spec.tags.push(spec_tag("u", "ImageStreamImage", &format!("base@{first}")));
        let err = apply_spec(Some(&old), &mut s2, &others, Utc::now()).unwrap_err();
        assert!(err.0.contains("more than one"), "{err}");
        let mut s3 = state();
        let old = s3.stream.clone();
        s3.stream.spec.tags.push(spec_tag("u", "ImageStreamImage", &format!("base@{}", &d(&twin).hex()[..12])));
        apply_spec(Some(&old), &mut s3, &others, Utc::now()).unwrap();
        assert_eq!(top(&s3, "u"), Some(d(&twin)));
    }
}
