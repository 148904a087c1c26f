//! The hot statements walk their indexes: no statement on the claim, settle or sweep path
//! may scan the jobs table or sort, or throughput would fall as the queue grows.

use rusqlite::Connection;

use super::{admin, enqueue, lease, limits, read, schema, settle};

/// The query plan of `sql`, one step per line.
fn plan(sql: &str) -> String {
    let mut conn = Connection::open_in_memory().unwrap();
    schema::migrate(&mut conn).unwrap();
    let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    // Unbound parameters plan as NULLs: no value is needed to choose the indexes.
    let mut rows = statement.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        steps.push(row.get::<_, String>(3).unwrap());
    }
    steps.join("\n")
}

fn assert_walks(sql: &str, index: &str) {
    let plan = plan(sql);
    assert!(plan.contains(index), "expected {index} in:\n{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "sorts:\n{plan}");
    assert!(
        !plan.lines().any(|step| step.trim() == "SCAN jobs"),
        "scans jobs:\n{plan}"
    );
}

#[test]
fn claim_walks_the_claimable_index_in_order() {
    assert_walks(lease::CLAIM, "jobs_claimable");
}

#[test]
fn the_sweep_walks_the_lease_index() {
    assert_walks(lease::EXPIRED, "jobs_leased");
}

#[test]
fn an_idempotency_key_is_found_through_its_index() {
    assert_walks(enqueue::HOLDER, "jobs_key");
}

#[test]
fn a_settle_finds_its_job_by_id() {
    assert_walks(settle::SETTLE, "INTEGER PRIMARY KEY");
}

#[test]
fn a_job_timeline_walks_the_events_index() {
    assert_walks(read::JOB_EVENTS, "events_job");
}

#[test]
fn prune_walks_the_finished_index() {
    assert_walks(admin::PRUNE, "jobs_finished");
}

#[test]
fn the_dead_letter_listing_walks_the_dead_index() {
    assert_walks(read::DEAD, "jobs_dead");
}

#[test]
fn flow_control_counts_and_lists_through_its_indexes() {
    assert_walks(limits::RUNNING, "jobs_tenant_running");
    assert_walks(limits::RUNNING_UNTENANTED, "jobs_leased");
    assert_walks(limits::UNTENANTED_HEADS, "jobs_untenanted_claimable");
    assert_walks(limits::NEXT_TENANT, "jobs_tenant_claimable");
    assert_walks(limits::FIRST_TENANT, "jobs_tenant_claimable");
    assert_walks(limits::TENANT_HEADS, "jobs_tenant_claimable");
    assert_walks(limits::HEADS, "jobs_claimable");
}

#[test]
fn a_group_is_checked_through_its_indexes() {
    let plan = plan(lease::CLAIM);
    assert!(plan.contains("jobs_group_running"), "{plan}");
    assert!(plan.contains("jobs_group_claimable"), "{plan}");
}
