//! etcd measured directly with etcd-client, for comparison with the API server on etcd: the same
//! concurrency, the same value (a stored VM object), one gRPC channel as the API server uses.
//!
//! Two write shapes: a plain put, and the compare-and-put transaction the API server's etcd store
//! issues for a create (put only if the key does not exist).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};

use crate::load::closed_loop;
use crate::report::Row;
use crate::stats::Summary;

/// Keys of the plain puts; outside the API server's `/registry/`.
const PUT_PREFIX: &str = "/ferrovirt-bench/raw-put/";
/// Keys of the transactional creates.
const TXN_PREFIX: &str = "/ferrovirt-bench/raw-txn/";

/// What to run against etcd.
#[derive(Debug, Clone)]
pub struct RawParams {
    pub objects: usize,
    pub concurrency: usize,
    pub list_reps: usize,
    pub page_size: u32,
}

/// Measure puts, transactional creates and range reads; returns the rows `raw etcd put` and
/// `raw etcd txn create`.
pub async fn measure(
    endpoints: &[String],
    value: Vec<u8>,
    p: &RawParams,
) -> anyhow::Result<[Row; 2]> {
    let client = etcd_client::Client::connect(endpoints, None)
        .await
        .with_context(|| format!("cannot connect to etcd at {}", endpoints.join(",")))?;
    let kv = client.kv_client();
    let value: Arc<[u8]> = value.into();

    let workers = vec![kv.clone(); p.concurrency];
    let val = value.clone();
    let puts = closed_loop(p.objects, workers.clone(), move |mut kv: KvClient, i| {
        let val = val.clone();
        async move {
            kv.put(format!("{PUT_PREFIX}{i:06}"), val.to_vec(), None)
                .await?;
            Ok(())
        }
    })
    .await
    .context("raw etcd puts")?;

    let val = value.clone();
    let creates = closed_loop(p.objects, workers, move |mut kv: KvClient, i| {
        let val = val.clone();
        async move {
            let key = format!("{TXN_PREFIX}{i:06}");
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), val.to_vec(), None)]);
            let resp = kv.txn(txn).await?;
            anyhow::ensure!(resp.succeeded(), "{key} already existed");
            Ok(())
        }
    })
    .await
    .context("raw etcd transactional creates")?;

    let mut full = Vec::with_capacity(p.list_reps);
    let mut paged = Vec::with_capacity(p.list_reps);
    for _ in 0..p.list_reps {
        let began = Instant::now();
        let n = list_all(kv.clone()).await?;
        full.push(began.elapsed());
        anyhow::ensure!(
            n == p.objects,
            "etcd range read returned {n} keys, expected {}",
            p.objects
        );
        let began = Instant::now();
        let n = list_paged(kv.clone(), p.page_size).await?;
        paged.push(began.elapsed());
        anyhow::ensure!(
            n == p.objects,
            "paged etcd range read returned {n} keys, expected {}",
            p.objects
        );
    }

    let put_row = Row {
        name: "raw etcd put".into(),
        creates_per_sec: Some(puts.rate()),
        create: Summary::of_durations(&puts.latencies),
        list_full: Summary::of_durations(&full),
        list_paged: Summary::of_durations(&paged),
        ..Row::default()
    };
    let txn_row = Row {
        name: "raw etcd txn create".into(),
        creates_per_sec: Some(creates.rate()),
        create: Summary::of_durations(&creates.latencies),
        ..Row::default()
    };
    Ok([put_row, txn_row])
}

async fn list_all(mut kv: KvClient) -> anyhow::Result<usize> {
    let resp = kv
        .get(PUT_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(resp.kvs().len())
}

/// Read the prefix in pages of `page_size`, every page at the first page's revision (a consistent
/// snapshot, as a Kubernetes paged list is).
async fn list_paged(mut kv: KvClient, page_size: u32) -> anyhow::Result<usize> {
    let end = prefix_end(PUT_PREFIX.as_bytes());
    let mut start = PUT_PREFIX.as_bytes().to_vec();
    let mut revision = 0;
    let mut total = 0;
    loop {
        let mut opts = GetOptions::new()
            .with_range(end.clone())
            .with_limit(i64::from(page_size));
        if revision != 0 {
            opts = opts.with_revision(revision);
        }
        let resp = kv.get(start.clone(), Some(opts)).await?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        total += resp.kvs().len();
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok(total),
        }
    }
}

/// The smallest key greater than every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
