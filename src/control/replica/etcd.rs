//! [`EtcdLock`]: the replicas' lock across hosts, an etcd lease and election (cargo feature
//! `etcd`; `--lock etcd://HOST:2379[,HOST:2379...]/PREFIX[?ttl=SECONDS]`).
//!
//! Two keys under the prefix: `PREFIX/term` (the last term handed out; it only grows) and
//! `PREFIX/leader` (`TERM ENDPOINT`, attached to the holder's lease). A replica campaigns with
//! one transaction: *if* no leader key exists and the term key is unchanged since it read
//! it, put the leader key under its lease and the term key to `max(term, min_term) + 1`.
//! So every acquisition takes a term above every term before it, and two replicas can never
//! both win one.
//!
//! Holding: the lease is kept alive every `ttl / 3`. The holder counts itself holder only
//! until `sent + ttl - ttl / 5`, where `sent` is when the last keep-alive *that was answered*
//! left: etcd starts the lease's countdown no earlier than that, so a partitioned holder
//! stops deciding (`held()` turns false) before etcd lets the lease go and a new active is
//! elected. A keep-alive that comes back with TTL 0 (the lease is gone) ends it at once.
//! Release (graceful hand-over) revokes the lease, which deletes the leader key.
//!
//! All etcd traffic runs on a thread of its own (a small tokio runtime: `etcd-client` is
//! async), so the controller's loop only ever reads and writes a shared record under a
//! mutex, never waits for the network. Every etcd call has a deadline (`ttl / 3`, at least
//! 100 ms) and asks for a leader (`require_leader`), so a member cut off from its quorum
//! answers "no leader" instead of hanging; after an error the thread talks to the next member
//! of the list (one at a time, so an unreachable member costs one deadline, not every call).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp,
};

use super::lock::{parse_record, Lock};

/// Default lease TTL (etcd counts in whole seconds; its floor is 1.5 election timeouts).
pub const DEFAULT_TTL: Duration = Duration::from_secs(2);
/// How often a replica that wants the lock, or follows one, reads the record.
const POLL: Duration = Duration::from_millis(25);
/// How long one `try_acquire` keeps the thread campaigning.
const WANT_FOR: Duration = Duration::from_millis(100);

/// Where the lock lives: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX[?ttl=SECONDS]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub ttl: Duration,
}

impl EtcdUrl {
    pub fn parse(url: &str) -> Result<EtcdUrl, String> {
        let bad = |why: &str| format!("bad etcd lock url {url:?}: {why}");
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("expected etcd://HOST:PORT/PREFIX"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "zonecast"));
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        if endpoints.is_empty() {
            return Err(bad("no host"));
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(bad("empty prefix"));
        }
        let mut ttl = DEFAULT_TTL;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ttl", v)) => {
                    let secs: u64 = v.parse().map_err(|_| bad("ttl is whole seconds"))?;
                    if !(1..=60).contains(&secs) {
                        return Err(bad("ttl must be 1 to 60 seconds"));
                    }
                    ttl = Duration::from_secs(secs);
                }
                _ => return Err(bad("the only option is ttl=SECONDS")),
            }
        }
        Ok(EtcdUrl {
            endpoints,
            prefix: prefix.to_string(),
            ttl,
        })
    }

    fn term_key(&self) -> String {
        format!("{}/term", self.prefix)
    }

    fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }
}

/// What the controller's loop and the etcd thread share.
#[derive(Default)]
struct Shared {
    /// Campaign for the lock as this endpoint, above this term, until then (set by each
    /// `try_acquire`: the loop asks every 20 ms while it may campaign, and stops asking when
    /// it may not).
    want: Option<(String, u64, Instant)>,
    /// A term won and not yet handed to the loop.
    won: Option<u64>,
    /// Holder until then (`None`: not holding).
    valid_until: Option<Instant>,
    /// Let go of the lease (set by `release`).
    release: bool,
    /// The last record read: term, and the holder's endpoint if any.
    record: (u64, Option<String>),
    stop: bool,
}

/// An etcd lease and election (see the module doc).
pub struct EtcdLock {
    url: EtcdUrl,
    shared: Arc<Mutex<Shared>>,
}

impl EtcdLock {
    /// Starts the etcd thread (it connects, and reconnects, on its own).
    pub fn start(url: EtcdUrl) -> Result<EtcdLock, String> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("etcd lock: cannot start its runtime: {e}"))?;
        let worker = Worker {
            url: url.clone(),
            shared: shared.clone(),
            deadline: (url.ttl / 3).max(Duration::from_millis(100)),
            client: None,
            endpoint: 0,
            lease: None,
            outage: false,
        };
        std::thread::Builder::new()
            .name("zc-etcd-lock".into())
            .spawn(move || runtime.block_on(worker.run()))
            .map_err(|e| format!("etcd lock: cannot start its thread: {e}"))?;
        Ok(EtcdLock { url, shared })
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Lock for EtcdLock {
    fn try_acquire(&mut self, endpoint: &str, min_term: u64) -> Result<Option<u64>, String> {
        let mut s = self.shared();
        let now = Instant::now();
        s.want = Some((endpoint.to_string(), min_term, now + WANT_FOR));
        match s.won.take() {
            Some(term) if s.valid_until.is_some_and(|u| now < u) => {
                s.want = None;
                Ok(Some(term))
            }
            _ => Ok(None),
        }
    }

    fn holder(&mut self) -> Result<(u64, Option<String>), String> {
        Ok(self.shared().record.clone())
    }

    fn held(&mut self) -> bool {
        let now = Instant::now();
        self.shared().valid_until.is_some_and(|u| now < u)
    }

    fn release(&mut self) {
        let mut s = self.shared();
        s.want = None;
        s.won = None;
        s.valid_until = None;
        s.release = true;
    }

    fn describe(&self) -> String {
        format!(
            "etcd lock {} at {}",
            self.url.prefix,
            self.url.endpoints.join(",")
        )
    }

    fn lapse(&self) -> Duration {
        // A new etcd leader renews every lease once: the lease can outlive its holder by
        // two TTLs.
        2 * self.url.ttl
    }
}

impl Drop for EtcdLock {
    fn drop(&mut self) {
        self.shared().stop = true;
    }
}

/// A lease this replica holds, and its keep-alive stream (opened on the current client when
/// first needed, and again after an error: the client may have moved to another member).
struct Held {
    id: i64,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    next_keepalive: Instant,
}

/// The etcd thread.
struct Worker {
    url: EtcdUrl,
    shared: Arc<Mutex<Shared>>,
    deadline: Duration,
    client: Option<Client>,
    /// The etcd member the client talks to (the next one after an error).
    endpoint: usize,
    lease: Option<Held>,
    /// In an outage: its first error was logged, the rest are not until it is over.
    outage: bool,
}

impl Worker {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(mut self) {
        loop {
            if self.shared().stop {
                if let Some(l) = self.lease.take() {
                    self.revoke(l.id).await;
                }
                return;
            }
            let result = self.step().await;
            match result {
                Ok(()) => {
                    if self.outage {
                        tracing::info!("etcd lock: reachable again");
                        self.outage = false;
                    }
                }
                Err(e) => {
                    if !self.outage {
                        tracing::warn!("etcd lock: {e}");
                        self.outage = true;
                    }
                    // Next time, a new connection to the next member.
                    self.client = None;
                    self.endpoint = (self.endpoint + 1) % self.url.endpoints.len();
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One round: let go if asked, keep a held lease alive, else read the record and
    /// campaign when the loop wants the lock.
    async fn step(&mut self) -> Result<(), String> {
        let release = std::mem::take(&mut self.shared().release);
        if release {
            if let Some(l) = self.lease.take() {
                self.revoke(l.id).await;
            }
        }
        if self.lease.is_some() {
            return self.keep_alive().await;
        }
        let record = self.read().await?;
        let want = {
            let mut s = self.shared();
            s.record = (record.0, record.1.clone());
            s.want.clone()
        };
        match want {
            Some((endpoint, min_term, until)) if record.1.is_none() && Instant::now() < until => {
                self.campaign(&endpoint, min_term, record.0, record.2).await
            }
            _ => Ok(()),
        }
    }

    async fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            let options = ConnectOptions::new()
                .with_connect_timeout(self.deadline)
                .with_timeout(self.deadline)
                .with_require_leader(true);
            let member = &self.url.endpoints[self.endpoint];
            let client = within(self.deadline, Client::connect([member], Some(options)))
                .await
                .map_err(|e| format!("{member}: {e}"))?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| "not connected".to_string())
    }

    /// The term, the holder's endpoint, and the term key's revision (0: absent).
    async fn read(&mut self) -> Result<(u64, Option<String>, i64), String> {
        let prefix = format!("{}/", self.url.prefix);
        let (term_key, leader_key) = (self.url.term_key(), self.url.leader_key());
        let deadline = self.deadline;
        let client = self.client().await?;
        let resp = within(
            deadline,
            client.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let (mut term, mut holder, mut revision) = (0, None, 0);
        for kv in resp.kvs() {
            let value = kv.value_str().unwrap_or_default();
            if kv.key() == term_key.as_bytes() {
                term = value.trim().parse().unwrap_or(0);
                revision = kv.mod_revision();
            } else if kv.key() == leader_key.as_bytes() {
                let (t, e) = parse_record(value);
                term = term.max(t);
                holder = e;
            }
        }
        Ok((term, holder, revision))
    }

    async fn campaign(
        &mut self,
        endpoint: &str,
        min_term: u64,
        term: u64,
        revision: i64,
    ) -> Result<(), String> {
        let ttl = self.url.ttl;
        let deadline = self.deadline;
        let (term_key, leader_key) = (self.url.term_key(), self.url.leader_key());
        let sent = Instant::now();
        let client = self.client().await?;
        let grant = within(deadline, client.lease_grant(ttl.as_secs() as i64, None)).await?;
        let id = grant.id();
        let new_term = term.max(min_term) + 1;
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader_key.clone(), CompareOp::Equal, 0),
                Compare::mod_revision(term_key.clone(), CompareOp::Equal, revision),
            ])
            .and_then([
                TxnOp::put(
                    leader_key,
                    format!("{new_term} {endpoint}"),
                    Some(PutOptions::new().with_lease(id)),
                ),
                TxnOp::put(term_key, new_term.to_string(), None),
            ]);
        let won = match within(deadline, client.txn(txn)).await {
            Ok(r) => r.succeeded(),
            Err(e) => {
                self.revoke(id).await;
                return Err(e);
            }
        };
        if !won {
            // Someone else was quicker.
            self.revoke(id).await;
            return Ok(());
        }
        // etcd may raise a short TTL to its floor, never lower it: count on the smaller.
        let granted = Duration::from_secs(grant.ttl().max(1) as u64).min(ttl);
        self.lease = Some(Held {
            id,
            stream: None,
            next_keepalive: sent + ttl / 3,
        });
        let mut s = self.shared();
        s.valid_until = Some(valid_until(sent, granted));
        s.won = Some(new_term);
        s.record = (new_term, Some(endpoint.to_string()));
        Ok(())
    }

    async fn keep_alive(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let still = self.shared().valid_until;
        let Some(mut held) = self.lease.take() else {
            return Ok(());
        };
        if still.is_none_or(|u| now >= u) {
            // Expired here (or released): never revive it; etcd lets it go on its own.
            self.shared().valid_until = None;
            self.revoke(held.id).await;
            return Ok(());
        }
        let result = if now < held.next_keepalive {
            Ok(())
        } else {
            self.renew(&mut held).await
        };
        if result.is_ok() || held.stream.is_none() {
            // Kept (or to be retried next round with a fresh stream).
            self.lease = Some(held);
        }
        result
    }

    /// One keep-alive round trip. On success the holder's validity moves on; on TTL 0 the
    /// lease is gone (the caller drops it); on an error the stream is dropped, to be opened
    /// again next round.
    async fn renew(&mut self, held: &mut Held) -> Result<(), String> {
        let ttl = self.url.ttl;
        let deadline = self.deadline;
        if held.stream.is_none() {
            let client = self.client().await?;
            held.stream = Some(within(deadline, client.lease_keep_alive(held.id)).await?);
        }
        let Some((keeper, stream)) = held.stream.as_mut() else {
            return Err("no keep-alive stream".into());
        };
        let sent = Instant::now();
        let answer = within(deadline, async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        match answer {
            Ok(Some(r)) if r.ttl() > 0 => {
                held.next_keepalive = sent + ttl / 3;
                let granted = Duration::from_secs(r.ttl() as u64).min(ttl);
                let mut s = self.shared();
                if s.valid_until.is_some() {
                    s.valid_until = Some(valid_until(sent, granted));
                }
                Ok(())
            }
            Ok(_) => {
                // TTL 0 or the stream closed: the lease is gone.
                self.shared().valid_until = None;
                Err("the lease expired".into())
            }
            Err(e) => {
                held.stream = None;
                Err(format!("keep-alive: {e}"))
            }
        }
    }

    async fn revoke(&mut self, id: i64) {
        let deadline = self.deadline;
        if let Ok(client) = self.client().await {
            let _ = tokio::time::timeout(deadline, client.lease_revoke(id)).await;
        }
    }
}

/// Until when a lease renewed by a keep-alive sent at `sent` is surely ours.
fn valid_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - ttl / 5
}

/// An etcd call with a deadline.
async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = EtcdUrl::parse("etcd://10.0.0.1:2379,10.0.0.2:2379/zc/eu?ttl=3").unwrap();
        assert_eq!(
            u.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(u.prefix, "zc/eu");
        assert_eq!(u.ttl, Duration::from_secs(3));
        let d = EtcdUrl::parse("etcd://127.0.0.1:2379").unwrap();
        assert_eq!((d.prefix.as_str(), d.ttl), ("zonecast", DEFAULT_TTL));
        for bad in [
            "http://x:1/p",
            "etcd:///p",
            "etcd://x:1/",
            "etcd://x:1/p?ttl=0",
            "etcd://x:1/p?ttl=abc",
            "etcd://x:1/p?lease=2",
        ] {
            assert!(EtcdUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_holder_stops_before_etcd_lets_go() {
        let sent = Instant::now();
        let ttl = Duration::from_secs(2);
        let until = valid_until(sent, ttl);
        assert!(until > sent && until < sent + ttl);
    }
}
