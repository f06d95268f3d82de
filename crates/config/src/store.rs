//! The configuration store with kubectl-apply semantics: identity is
//! kind/namespace/name, applying again replaces, deleting removes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::resource::{Kind, ObjectKey, Resource};

/// What `apply` did to one object, as kubectl words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAction {
    /// The object did not exist.
    Created,
    /// The object existed with another configuration.
    Configured,
    /// The object existed with the same configuration.
    Unchanged,
}

impl ApplyAction {
    /// kubectl's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// All applied objects. Cheap to clone per change (the objects themselves are
/// shared, never copied); readers get immutable snapshots.
#[derive(Debug, Clone, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Entry>,
    next_sequence: u64,
}

/// One applied object.
#[derive(Debug, Clone)]
struct Entry {
    /// The object, shared by the clones of the store.
    resource: Arc<Resource>,
    /// Its position in creation order (kept when it is configured again), Istio's
    /// tie-breaker where it orders by creationTimestamp.
    created: u64,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies objects that were already loaded and validated as a whole.
    pub fn apply(&mut self, resources: Vec<Resource>) -> Vec<(ObjectKey, ApplyAction)> {
        let mut outcomes = Vec::with_capacity(resources.len());
        for r in resources {
            let key = r.key();
            let (action, created) = match self.objects.get(&key) {
                None => {
                    let created = self.next_sequence;
                    self.next_sequence += 1;
                    (ApplyAction::Created, created)
                }
                Some(old) if old.resource.same_config(&r) => (ApplyAction::Unchanged, old.created),
                Some(old) => (ApplyAction::Configured, old.created),
            };
            let entry = Entry {
                resource: Arc::new(r),
                created,
            };
            self.objects.insert(key.clone(), entry);
            outcomes.push((key, action));
        }
        outcomes
    }

    /// Removes the object with this identity; returns it if it was there.
    pub fn delete(&mut self, key: &ObjectKey) -> Option<Resource> {
        self.objects
            .remove(key)
            .map(|e| Arc::unwrap_or_clone(e.resource))
    }

    /// The position of this object in creation order (lower is older).
    pub fn creation_index(&self, key: &ObjectKey) -> u64 {
        self.objects.get(key).map_or(u64::MAX, |e| e.created)
    }

    /// The object with this identity.
    pub fn get(&self, key: &ObjectKey) -> Option<&Resource> {
        self.objects.get(key).map(|e| &*e.resource)
    }

    /// Every object of one kind, ordered by namespace and name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.objects
            .range(
                ObjectKey {
                    kind,
                    namespace: String::new(),
                    name: String::new(),
                }..,
            )
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, e)| &*e.resource)
    }

    /// Every object of one kind with its position in creation order (as
    /// [`Store::creation_index`] gives it), ordered by namespace and name. Cheaper than
    /// looking each object's position up: no key is built, no map searched.
    pub fn of_kind_with_creation(&self, kind: Kind) -> impl Iterator<Item = (&Resource, u64)> {
        let start = ObjectKey {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, e)| (&*e.resource, e.created))
    }

    /// Every object.
    pub fn all(&self) -> impl Iterator<Item = &Resource> {
        self.objects.values().map(|e| &*e.resource)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}
