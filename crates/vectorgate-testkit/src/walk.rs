//! Walking a whole store through `scan`, for tests that compare what stores
//! hold (the conformance suite's own walk also checks the paging protocol;
//! this one trusts it).

use std::collections::BTreeSet;
use vectorgate::{Record, Result, ScanRequest, VectorStore};

/// Every record `request` selects, walking pages from its `after_id`
/// (`limit` 0 means pages of 1000).
pub async fn records(store: &dyn VectorStore, mut request: ScanRequest) -> Result<Vec<Record>> {
    if request.limit == 0 {
        request.limit = 1000;
    }
    let mut out = Vec::new();
    loop {
        let page = store.scan(&request).await?;
        out.extend(page.records);
        match page.next_cursor {
            Some(next) => request.after_id = Some(next),
            None => return Ok(out),
        }
    }
}

/// Every record with its vector, in id order.
pub async fn everything(store: &dyn VectorStore) -> Result<Vec<Record>> {
    records(
        store,
        ScanRequest {
            with_vectors: true,
            ..Default::default()
        },
    )
    .await
}

/// The ids of every record, or of one team's.
pub async fn ids(store: &dyn VectorStore, team: Option<&str>) -> Result<BTreeSet<String>> {
    let request = ScanRequest {
        team_id: team.map(str::to_owned),
        ..Default::default()
    };
    Ok(records(store, request)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}
