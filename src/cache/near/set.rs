//! The near caches of one instance: one tracking connection for a single
//! server or Sentinel's master, and one per master for a Redis Cluster,
//! each key looked up on the connection of the master that serves its slot.
//!
//! Why one per master: Redis tracks the keys a connection read on that
//! connection's server, and pushes their invalidations there. A key read on
//! its own master is tracked where its deletes land, so the fence argument
//! of [`super`] holds per key; and each master is believed for an epoch on
//! its own marker ([`crate::cache::shards`]).
//!
//! The cluster's layout is fred's, read again every
//! [`LAYOUT_EVERY`]; when it changes (a failover, slots moved) the
//! connections are opened anew on the new masters, and their near caches
//! start empty.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use fred::{clients::Client, interfaces::ClusterInterface};
use tokio_util::sync::CancellationToken;

use super::{Lookup, Near, Place, Target};
use crate::{
    cache::{Epoch, shards::Layout, trust::Trust},
    metrics::Metrics,
};

/// How often the cluster's layout is asked for (`CLUSTER SLOTS`).
const LAYOUT_EVERY: Duration = Duration::from_secs(1);

/// How each near cache is made: the settings they share.
#[derive(Debug, Clone)]
pub(in crate::cache) struct Making {
    pub trust: Arc<Trust>,
    pub metrics: Arc<Metrics>,
    /// Entries kept by the instance, over every connection.
    pub max_entries: usize,
    pub ttl: Duration,
    pub lookup_timeout: Duration,
}

impl Making {
    fn start(&self, target: Target, share: usize) -> Near {
        Near::start(
            target,
            Arc::clone(&self.trust),
            Arc::clone(&self.metrics),
            self.max_entries / share.max(1),
            self.ttl,
            self.lookup_timeout,
        )
    }
}

/// The near caches reads go through.
#[derive(Debug, Clone)]
pub(in crate::cache) enum NearSet {
    One(Near),
    Cluster(Arc<Cluster>),
}

#[derive(Debug)]
pub(in crate::cache) struct Cluster {
    current: RwLock<Arc<Masters>>,
    closed: CancellationToken,
}

/// The connections to the masters of one layout, in the layout's order.
#[derive(Debug, Default)]
struct Masters {
    layout: Option<Layout>,
    nears: Vec<Near>,
}

impl NearSet {
    /// One connection, to `target`.
    pub(in crate::cache) fn one(target: Target, making: &Making) -> Self {
        NearSet::One(making.start(target, 1))
    }

    /// One connection per master of the cluster `client` is connected to,
    /// each like `template`, following the layout as it changes.
    pub(in crate::cache) fn cluster(client: Client, template: Target, making: Making) -> Self {
        let cluster = Arc::new(Cluster {
            current: RwLock::new(Arc::new(Masters::default())),
            closed: CancellationToken::new(),
        });
        tokio::spawn(follow(client, template, making, Arc::clone(&cluster)));
        NearSet::Cluster(cluster)
    }

    /// Looks `key` (of `epoch`) up on the connection of its master.
    pub(in crate::cache) async fn get(&self, key: &str, epoch: Epoch) -> Lookup {
        match self {
            NearSet::One(near) => near.get(key, epoch).await,
            NearSet::Cluster(cluster) => {
                let masters = cluster.masters();
                let shard = masters.layout.as_ref().and_then(|l| l.shard_of(key));
                match shard.and_then(|i| masters.nears.get(i)) {
                    Some(near) => near.get(key, epoch).await,
                    None => Lookup::Untrusted,
                }
            }
        }
    }

    /// True when `f` holds for every connection (and there is one).
    fn all(&self, f: impl Fn(&Near) -> bool) -> bool {
        match self {
            NearSet::One(near) => f(near),
            NearSet::Cluster(cluster) => {
                let masters = cluster.masters();
                !masters.nears.is_empty() && masters.nears.iter().all(f)
            }
        }
    }

    fn each(&self, f: impl FnMut(&Near)) {
        match self {
            NearSet::One(near) => std::iter::once(near).for_each(f),
            NearSet::Cluster(cluster) => cluster.masters().nears.iter().for_each(f),
        }
    }

    /// True while every connection is up and tracking.
    pub(in crate::cache) fn is_up(&self) -> bool {
        self.all(Near::is_up)
    }

    /// Entries held now, over every connection.
    pub(in crate::cache) fn len(&self) -> usize {
        let mut len = 0;
        self.each(|near| len += near.len());
        len
    }

    /// Makes every connection read the marker of the epoch wanted now,
    /// having forgotten what it verified.
    pub(in crate::cache) fn want_again(&self) {
        self.each(|near| {
            near.unverify();
            near.wake();
        });
    }

    /// True when every master is believed for `epoch`: reads use the cache
    /// only then.
    pub(in crate::cache) fn believes_everywhere(&self, epoch: Epoch) -> bool {
        self.all(|near| near.believes(epoch))
    }

    /// The epoch every master is believed for, if one is.
    pub(in crate::cache) fn believed(&self) -> Option<Epoch> {
        let mut believed: Option<Option<Epoch>> = None;
        let mut same = true;
        self.each(|near| {
            let epoch = near.believed();
            same &= believed.is_none_or(|b| b == epoch);
            believed.get_or_insert(epoch);
        });
        if same { believed.flatten() } else { None }
    }

    /// Stops every connection (and the following of the layout).
    pub(in crate::cache) fn close(&self) {
        if let NearSet::Cluster(cluster) = self {
            cluster.closed.cancel();
        }
        self.each(Near::close);
    }
}

impl Cluster {
    fn masters(&self) -> Arc<Masters> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Reads the layout now and every [`LAYOUT_EVERY`]; when it changed, opens a
/// connection per master of the new one and closes the old ones.
async fn follow(client: Client, template: Target, making: Making, cluster: Arc<Cluster>) {
    loop {
        if tokio::time::timeout(LAYOUT_EVERY, client.sync_cluster())
            .await
            .is_ok_and(|synced| synced.is_ok())
            && let Some(layout) = client.cached_cluster_state().and_then(|r| Layout::of(&r))
            && cluster.masters().layout.as_ref() != Some(&layout)
        {
            tracing::info!(
                masters = layout.shards.len(),
                "Redis Cluster layout: a near cache per master"
            );
            let nears = layout
                .shards
                .iter()
                .map(|shard| {
                    let target = Target {
                        place: Place::ClusterMaster {
                            host: shard.host.clone(),
                            port: shard.port,
                        },
                        marker_tag: Some(shard.tag.clone()),
                        ..template.clone()
                    };
                    making.start(target, layout.shards.len())
                })
                .collect();
            let new = Arc::new(Masters {
                layout: Some(layout),
                nears,
            });
            let old = std::mem::replace(
                &mut *cluster
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                new,
            );
            old.nears.iter().for_each(Near::close);
        }
        tokio::select! {
            () = cluster.closed.cancelled() => break,
            () = tokio::time::sleep(LAYOUT_EVERY) => {}
        }
    }
    cluster.masters().nears.iter().for_each(Near::close);
}
