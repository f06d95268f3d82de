//! The configuration store with kubectl-apply semantics: identity is
//! kind/namespace/name, applying again replaces, deleting removes.

use std::collections::BTreeMap;

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

/// All applied objects. Cheap to clone per change; readers get immutable snapshots.
#[derive(Debug, Clone, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Resource>,
    /// Creation order of each object (kept when it is configured again), Istio's
    /// tie-breaker where it orders by creationTimestamp.
    created: BTreeMap<ObjectKey, u64>,
    next_sequence: u64,
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
            let action = match self.objects.get(&key) {
                None => ApplyAction::Created,
                Some(old) if old.same_config(&r) => ApplyAction::Unchanged,
                Some(_) => ApplyAction::Configured,
            };
            if action == ApplyAction::Created {
                self.created.insert(key.clone(), self.next_sequence);
                self.next_sequence += 1;
            }
            self.objects.insert(key.clone(), r);
            outcomes.push((key, action));
        }
        outcomes
    }

    /// Removes the object with this identity; returns it if it was there.
    pub fn delete(&mut self, key: &ObjectKey) -> Option<Resource> {
        self.created.remove(key);
        self.objects.remove(key)
    }

    /// The position of this object in creation order (lower is older).
    pub fn creation_index(&self, key: &ObjectKey) -> u64 {
        self.created.get(key).copied().unwrap_or(u64::MAX)
    }

    /// The object with this identity.
    pub fn get(&self, key: &ObjectKey) -> Option<&Resource> {
        self.objects.get(key)
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
            .map(|(_, r)| r)
    }

    /// Every object.
    pub fn all(&self) -> impl Iterator<Item = &Resource> {
        self.objects.values()
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
