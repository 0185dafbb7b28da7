-- The whole town state of SPEC.md §2 as adapted by DESIGN.md §3.
--
-- Every table of town state carries town_id, and every primary key and foreign key starts
-- with it: each town is a tenant, every query filters on it, and the schema can later be
-- distributed by town_id (Citus). Timestamps are timestamptz; labels, metadata and
-- payloads are jsonb; enumerations are CHECK constraints.
--
-- Columns written inside a tick take the tick's clock value as a parameter, never now():
-- a tick is a deterministic function of its recorded inputs (DESIGN.md §1).

-- +goose Up

-- towns: one row per tenant. The tick locks this row (FOR NO KEY UPDATE) and updates it on
-- every tick, so it carries no index on any column a tick changes and a low fillfactor:
-- those updates stay HOT (DESIGN.md §7).
CREATE TABLE towns (
    town_id               uuid PRIMARY KEY,
    name                  text NOT NULL CHECK (name <> ''),
    config                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    draining              boolean NOT NULL DEFAULT false,
    drain_nonce           text,
    drain_started_at      timestamptz,
    container_instance_id text,
    next_tick_at          timestamptz NOT NULL DEFAULT now(),
    last_tick_at          timestamptz,
    tick_count            bigint NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

CREATE TABLE rigs (
    town_id        uuid NOT NULL REFERENCES towns ON DELETE CASCADE,
    rig_id         uuid NOT NULL,
    name           text NOT NULL CHECK (name <> ''),
    git_url        text NOT NULL DEFAULT '',
    default_branch text NOT NULL DEFAULT 'main' CHECK (default_branch <> ''),
    config         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (town_id, rig_id),
    UNIQUE (town_id, name)
);

-- beads: the universal work item (SPEC.md §2.1). Agents are beads too (type 'agent') with
-- their operational state in the agents satellite.
CREATE TABLE beads (
    town_id                  uuid NOT NULL REFERENCES towns ON DELETE CASCADE,
    bead_id                  uuid NOT NULL,
    type                     text NOT NULL CHECK (type IN
        ('issue', 'message', 'escalation', 'merge_request', 'convoy', 'molecule', 'agent')),
    status                   text NOT NULL DEFAULT 'open' CHECK (status IN
        ('open', 'in_progress', 'in_review', 'closed', 'failed')),
    title                    text NOT NULL,
    body                     text,
    rig_id                   uuid,
    parent_bead_id           uuid,
    -- an agent id, or the literal 'system' for system-owned beads; for messages the recipient
    assignee_agent_bead_id   text,
    priority                 text NOT NULL DEFAULT 'medium' CHECK (priority IN
        ('low', 'medium', 'high', 'critical')),
    labels                   jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(labels) = 'array'),
    metadata                 jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    dispatch_attempts        integer NOT NULL DEFAULT 0 CHECK (dispatch_attempts >= 0),
    last_dispatch_attempt_at timestamptz,
    created_by               text,
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL,
    closed_at                timestamptz,
    PRIMARY KEY (town_id, bead_id),
    FOREIGN KEY (town_id, rig_id) REFERENCES rigs (town_id, rig_id),
    FOREIGN KEY (town_id, parent_bead_id) REFERENCES beads (town_id, bead_id)
);
CREATE INDEX beads_type_status ON beads (town_id, type, status);
CREATE INDEX beads_parent ON beads (town_id, parent_bead_id) WHERE parent_bead_id IS NOT NULL;
CREATE INDEX beads_rig_status ON beads (town_id, rig_id, status);
CREATE INDEX beads_assignee ON beads (town_id, assignee_agent_bead_id, type, status)
    WHERE assignee_agent_bead_id IS NOT NULL;

-- agents: the agent_metadata satellite of an 'agent' bead (SPEC.md §2.2).
CREATE TABLE agents (
    town_id                 uuid NOT NULL,
    agent_id                uuid NOT NULL,
    role                    text NOT NULL CHECK (role IN ('polecat', 'refinery', 'mayor', 'witness')),
    name                    text NOT NULL CHECK (name <> ''),
    rig_id                  uuid,
    identity                text NOT NULL,
    status                  text NOT NULL DEFAULT 'idle' CHECK (status IN
        ('idle', 'working', 'waiting', 'stalled', 'dead')),
    current_hook_bead_id    uuid,
    dispatch_attempts       integer NOT NULL DEFAULT 0 CHECK (dispatch_attempts >= 0),
    checkpoint              jsonb,
    last_activity_at        timestamptz,
    agent_status_message    text,
    agent_status_updated_at timestamptz,
    last_event_type         text,
    last_event_at           timestamptz,
    active_tools            jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(active_tools) = 'array'),
    stalled_at              timestamptz,
    container_process_id    text,
    created_at              timestamptz NOT NULL,
    PRIMARY KEY (town_id, agent_id),
    UNIQUE (town_id, identity),
    FOREIGN KEY (town_id, agent_id) REFERENCES beads (town_id, bead_id) ON DELETE CASCADE,
    FOREIGN KEY (town_id, rig_id) REFERENCES rigs (town_id, rig_id),
    FOREIGN KEY (town_id, current_hook_bead_id) REFERENCES beads (town_id, bead_id)
        ON DELETE SET NULL (current_hook_bead_id)
);
CREATE INDEX agents_hook ON agents (town_id, current_hook_bead_id) WHERE current_hook_bead_id IS NOT NULL;
-- The mayor is a town singleton and the refinery a per-rig singleton (SPEC.md §2.14).
CREATE UNIQUE INDEX agents_one_mayor ON agents (town_id) WHERE role = 'mayor';
CREATE UNIQUE INDEX agents_one_refinery ON agents (town_id, rig_id) WHERE role = 'refinery';

-- agent_heartbeats: liveness signals are not events (DESIGN.md §1). An agent's heartbeat
-- overwrites its row and bumps seq; the next tick takes every row whose seq moved past
-- applied_seq as a recorded input and applies touchAgent semantics.
CREATE TABLE agent_heartbeats (
    town_id               uuid NOT NULL REFERENCES towns ON DELETE CASCADE,
    agent_id              uuid NOT NULL,
    received_at           timestamptz NOT NULL,
    last_event_type       text,
    last_event_at         timestamptz,
    active_tools          jsonb CHECK (active_tools IS NULL OR jsonb_typeof(active_tools) = 'array'),
    container_instance_id text,
    seq                   bigint NOT NULL DEFAULT 1,
    applied_seq           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (town_id, agent_id)
) WITH (fillfactor = 70);

CREATE TABLE bead_dependencies (
    town_id            uuid NOT NULL,
    bead_id            uuid NOT NULL,
    depends_on_bead_id uuid NOT NULL,
    dependency_type    text NOT NULL CHECK (dependency_type IN ('blocks', 'tracks', 'parent-child')),
    created_at         timestamptz NOT NULL,
    PRIMARY KEY (town_id, bead_id, depends_on_bead_id),
    CHECK (bead_id <> depends_on_bead_id),
    FOREIGN KEY (town_id, bead_id) REFERENCES beads (town_id, bead_id) ON DELETE CASCADE,
    FOREIGN KEY (town_id, depends_on_bead_id) REFERENCES beads (town_id, bead_id) ON DELETE CASCADE
);
CREATE INDEX bead_dependencies_depends_on ON bead_dependencies (town_id, depends_on_bead_id);

CREATE TABLE review_metadata (
    town_id                uuid NOT NULL,
    bead_id                uuid NOT NULL,
    branch                 text NOT NULL,
    target_branch          text NOT NULL DEFAULT 'main',
    merge_commit           text,
    pr_url                 text CHECK (pr_url IS NULL OR pr_url LIKE 'https://%'),
    retry_count            integer NOT NULL DEFAULT 0,
    auto_merge_ready_since timestamptz,
    last_feedback_check_at timestamptz,
    PRIMARY KEY (town_id, bead_id),
    FOREIGN KEY (town_id, bead_id) REFERENCES beads (town_id, bead_id) ON DELETE CASCADE
);

CREATE TABLE convoy_metadata (
    town_id        uuid NOT NULL,
    bead_id        uuid NOT NULL,
    total_beads    integer NOT NULL DEFAULT 0,
    closed_beads   integer NOT NULL DEFAULT 0,
    landed_at      timestamptz,
    feature_branch text,
    merge_mode     text CHECK (merge_mode IN ('review-then-land', 'review-and-merge')),
    staged         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (town_id, bead_id),
    FOREIGN KEY (town_id, bead_id) REFERENCES beads (town_id, bead_id) ON DELETE CASCADE
);

CREATE TABLE escalation_metadata (
    town_id             uuid NOT NULL,
    bead_id             uuid NOT NULL,
    severity            text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    category            text,
    acknowledged        boolean NOT NULL DEFAULT false,
    re_escalation_count integer NOT NULL DEFAULT 0,
    acknowledged_at     timestamptz,
    PRIMARY KEY (town_id, bead_id),
    FOREIGN KEY (town_id, bead_id) REFERENCES beads (town_id, bead_id) ON DELETE CASCADE
);

-- town_events: the inbox of facts (SPEC.md §2.7, DESIGN.md §3). seq is the drain order;
-- a failing event is retried up to a bound (attempts, last_error) and then goes 'dead'.
-- idempotency_key lets a retried side-effect job report its outcome at most once.
CREATE TABLE town_events (
    seq               bigserial,
    town_id           uuid NOT NULL REFERENCES towns ON DELETE CASCADE,
    event_id          uuid NOT NULL,
    event_type        text NOT NULL CHECK (event_type IN (
        -- SPEC.md §3.2
        'agent_done', 'agent_completed', 'container_status', 'container_eviction',
        'pr_status_changed', 'bead_created', 'bead_cancelled', 'convoy_started',
        'nudge_timeout', 'pr_feedback_detected', 'pr_auto_merge', 'pr_conflict_detected',
        -- user intent recorded as facts (one writer)
        'bead_status_changed', 'bead_updated', 'bead_deleted', 'convoy_created',
        'rig_created', 'rig_updated', 'rig_deleted', 'town_config_updated',
        'agent_registered', 'agent_deleted', 'agent_reset', 'mail_sent', 'nudge_requested',
        'escalation_acknowledged', 'container_ready', 'triage_resolved',
        -- side-effect outcomes
        'agent_dispatched', 'agent_dispatch_failed', 'agent_stopped', 'nudge_delivered',
        'nudge_delivery_failed', 'mail_delivered', 'mail_delivery_failed', 'pr_polled',
        'pr_poll_failed', 'pr_merge_failed'
    )),
    agent_id          uuid,
    bead_id           uuid,
    payload           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'processed', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text,
    idempotency_key   text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    processed_at      timestamptz,
    processed_tick_id bigint,
    PRIMARY KEY (town_id, seq),
    UNIQUE (town_id, event_id)
);
CREATE INDEX town_events_pending ON town_events (town_id, seq) WHERE state = 'pending';
CREATE INDEX town_events_created ON town_events (town_id, created_at);
CREATE INDEX town_events_subject_bead ON town_events (town_id, bead_id) WHERE bead_id IS NOT NULL;
CREATE INDEX town_events_subject_agent ON town_events (town_id, agent_id) WHERE agent_id IS NOT NULL;
CREATE UNIQUE INDEX town_events_idempotency ON town_events (town_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE agent_nudges (
    town_id      uuid NOT NULL,
    nudge_id     uuid NOT NULL,
    agent_id     uuid NOT NULL,
    message      text NOT NULL,
    mode         text NOT NULL DEFAULT 'wait-idle' CHECK (mode IN ('wait-idle', 'immediate', 'queue')),
    priority     text NOT NULL DEFAULT 'normal' CHECK (priority IN ('normal', 'urgent')),
    source       text NOT NULL DEFAULT 'system',
    created_at   timestamptz NOT NULL,
    delivered_at timestamptz,
    expires_at   timestamptz,
    PRIMARY KEY (town_id, nudge_id),
    FOREIGN KEY (town_id, agent_id) REFERENCES agents (town_id, agent_id) ON DELETE CASCADE
);
CREATE INDEX agent_nudges_pending ON agent_nudges (town_id, agent_id) WHERE delivered_at IS NULL;

-- bead_events: the audit/activity feed (SPEC.md §2.9).
CREATE TABLE bead_events (
    town_id       uuid NOT NULL,
    bead_event_id bigserial,
    bead_id       uuid NOT NULL,
    agent_id      uuid,
    event_type    text NOT NULL CHECK (event_type IN (
        'created', 'assigned', 'hooked', 'unhooked', 'status_changed', 'closed', 'escalated',
        'notification_failed', 'mail_sent', 'review_submitted', 'review_completed',
        'agent_spawned', 'agent_exited', 'pr_created', 'pr_creation_failed', 'agent_status',
        'triage_resolved', 'fields_updated', 'review_queue_depth_alert',
        'escalation_rate_spike', 'agent_restart_loop', 'rework_requested', 'babysit_started'
    )),
    old_value     text,
    new_value     text,
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (town_id, bead_event_id),
    FOREIGN KEY (town_id, bead_id) REFERENCES beads (town_id, bead_id) ON DELETE CASCADE
);
CREATE INDEX bead_events_bead ON bead_events (town_id, bead_id);
CREATE INDEX bead_events_recent ON bead_events (town_id, created_at);

-- reconciler_ticks: one row per tick; range-partitioned by day with retention by dropping
-- partitions. No foreign keys: a row must stay cheap to write (DESIGN.md §3, §7).
CREATE SEQUENCE reconciler_ticks_tick_id_seq;
CREATE TABLE reconciler_ticks (
    tick_id                bigint NOT NULL DEFAULT nextval('reconciler_ticks_tick_id_seq'),
    town_id                uuid NOT NULL,
    started_at             timestamptz NOT NULL,
    clock_at               timestamptz NOT NULL,
    wall_clock_us          integer NOT NULL,
    drain_us               integer NOT NULL DEFAULT 0,
    snapshot_us            integer NOT NULL DEFAULT 0,
    reconcile_us           integer NOT NULL DEFAULT 0,
    apply_us               integer NOT NULL DEFAULT 0,
    events_drained         integer NOT NULL DEFAULT 0,
    events_failed          integer NOT NULL DEFAULT 0,
    events_dead            integer NOT NULL DEFAULT 0,
    heartbeats_applied     integer NOT NULL DEFAULT 0,
    actions_emitted        integer NOT NULL DEFAULT 0,
    actions_skipped        integer NOT NULL DEFAULT 0,
    actions_by_type        jsonb NOT NULL DEFAULT '{}',
    side_effects_attempted integer NOT NULL DEFAULT 0,
    side_effects_succeeded integer NOT NULL DEFAULT 0,
    side_effects_failed    integer NOT NULL DEFAULT 0,
    invariant_violations   integer NOT NULL DEFAULT 0,
    pending_event_count    integer NOT NULL DEFAULT 0,
    next_tick_at           timestamptz,
    worker_id              text,
    PRIMARY KEY (town_id, started_at, tick_id)
) PARTITION BY RANGE (started_at);
-- Safety net: a tick never fails for want of a partition. The maintenance job keeps the
-- daily partitions ahead of time so this one stays empty.
CREATE TABLE reconciler_ticks_default PARTITION OF reconciler_ticks DEFAULT;

-- gastown_ensure_tick_partitions creates the daily partitions of reconciler_ticks from
-- today (UTC) through days_ahead days ahead; it is idempotent.
-- +goose StatementBegin
CREATE FUNCTION gastown_ensure_tick_partitions(days_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    created integer := 0;
    part text;
BEGIN
    FOR i IN 0..days_ahead LOOP
        d := (now() AT TIME ZONE 'UTC')::date + i;
        part := 'reconciler_ticks_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF reconciler_ticks FOR VALUES FROM (%L) TO (%L)',
                part, (d::timestamp AT TIME ZONE 'UTC'), ((d + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
-- +goose StatementEnd
SELECT gastown_ensure_tick_partitions(7);

-- tick_inputs: what a tick took besides its events (which carry processed_tick_id):
-- the heartbeats it applied. With reconciler_ticks.clock_at this makes a tick re-runnable.
CREATE TABLE tick_inputs (
    town_id    uuid NOT NULL REFERENCES towns ON DELETE CASCADE,
    tick_id    bigint NOT NULL,
    clock_at   timestamptz NOT NULL,
    heartbeats jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (town_id, tick_id)
);

-- invariant_violations: one row per violation episode of one subject; reported when it
-- starts, kept current while it persists, resolved when it stops (SPEC.md §6).
CREATE TABLE invariant_violations (
    violation_id  bigserial PRIMARY KEY,
    town_id       uuid NOT NULL REFERENCES towns ON DELETE CASCADE,
    invariant     integer NOT NULL CHECK (invariant IN (3, 4, 5, 6, 7)),
    subject_id    text NOT NULL,
    message       text NOT NULL,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    ticks_seen    integer NOT NULL DEFAULT 1,
    resolved_at   timestamptz
);
CREATE UNIQUE INDEX invariant_violations_open ON invariant_violations (town_id, invariant, subject_id)
    WHERE resolved_at IS NULL;

-- +goose Down
DROP TABLE invariant_violations;
DROP TABLE tick_inputs;
DROP FUNCTION gastown_ensure_tick_partitions(integer);
DROP TABLE reconciler_ticks;
DROP SEQUENCE reconciler_ticks_tick_id_seq;
DROP TABLE bead_events;
DROP TABLE agent_nudges;
DROP TABLE town_events;
DROP TABLE escalation_metadata;
DROP TABLE convoy_metadata;
DROP TABLE review_metadata;
DROP TABLE bead_dependencies;
DROP TABLE agent_heartbeats;
DROP TABLE agents;
DROP TABLE beads;
DROP TABLE rigs;
DROP TABLE towns;
