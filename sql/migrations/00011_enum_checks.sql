-- Enumerations checked by a cast to an enum type instead of an IN list (ISSUE 8).
-- Postgres rebuilds a table's CHECK expressions from their stored node trees at every
-- INSERT and UPDATE statement, and an IN list's array constant is stored byte by byte:
-- town_events' event_type check alone was 8 KB to parse per statement, for every append and
-- every event marked processed, and in a profile of the active workload ExecConstraints
-- took an eighth of Postgres's CPU. A cast to an enum is a small node and a catalog-cache
-- lookup. On this machine (db BenchmarkEventRowWrites: pipelined one-row inserts) an insert
-- into town_events with the IN lists cost 2.2–2.9× one into a copy without checks; with the
-- casts 1.2–2.0× (BENCHMARKS.md). The columns stay text; a value outside the enumeration
-- still fails the write ("invalid input value for enum town_event_type: ...", SQLSTATE
-- 22P02). A new value is an ALTER TYPE ... ADD VALUE in a later migration.
-- Constraints are added NOT VALID and then validated: VALIDATE takes a lock that leaves
-- reads and writes running on a large table.

-- +goose Up
CREATE TYPE town_event_type AS ENUM (
    'agent_done', 'agent_completed', 'container_status', 'container_eviction',
    'pr_status_changed', 'bead_created', 'bead_cancelled', 'convoy_started',
    'nudge_timeout', 'pr_feedback_detected', 'pr_auto_merge', 'pr_conflict_detected',
    'bead_status_changed', 'bead_updated', 'bead_deleted', 'convoy_created', 'rig_created',
    'rig_updated', 'rig_deleted', 'town_config_updated', 'agent_registered',
    'agent_deleted', 'agent_reset', 'mail_sent', 'nudge_requested',
    'escalation_acknowledged', 'container_ready', 'triage_resolved', 'agent_dispatched',
    'agent_dispatch_failed', 'agent_stopped', 'nudge_delivered', 'nudge_delivery_failed',
    'mail_delivered', 'mail_delivery_failed', 'pr_polled', 'pr_poll_failed',
    'pr_merge_failed'
);
ALTER TABLE town_events DROP CONSTRAINT town_events_event_type_check,
    ADD CONSTRAINT town_events_event_type_check CHECK (event_type::town_event_type IS NOT NULL) NOT VALID;
ALTER TABLE town_events VALIDATE CONSTRAINT town_events_event_type_check;

CREATE TYPE town_event_state AS ENUM (
    'pending', 'processed', 'dead'
);
ALTER TABLE town_events DROP CONSTRAINT town_events_state_check,
    ADD CONSTRAINT town_events_state_check CHECK (state::town_event_state IS NOT NULL) NOT VALID;
ALTER TABLE town_events VALIDATE CONSTRAINT town_events_state_check;

CREATE TYPE bead_event_type AS ENUM (
    'created', 'assigned', 'hooked', 'unhooked', 'status_changed', 'closed', 'escalated',
    'notification_failed', 'mail_sent', 'review_submitted', 'review_completed',
    'agent_spawned', 'agent_exited', 'pr_created', 'pr_creation_failed', 'agent_status',
    'triage_resolved', 'fields_updated', 'review_queue_depth_alert',
    'escalation_rate_spike', 'agent_restart_loop', 'rework_requested', 'babysit_started'
);
ALTER TABLE bead_events DROP CONSTRAINT bead_events_event_type_check,
    ADD CONSTRAINT bead_events_event_type_check CHECK (event_type::bead_event_type IS NOT NULL) NOT VALID;
ALTER TABLE bead_events VALIDATE CONSTRAINT bead_events_event_type_check;

CREATE TYPE bead_type AS ENUM (
    'issue', 'message', 'escalation', 'merge_request', 'convoy', 'molecule', 'agent'
);
ALTER TABLE beads DROP CONSTRAINT beads_type_check,
    ADD CONSTRAINT beads_type_check CHECK (type::bead_type IS NOT NULL) NOT VALID;
ALTER TABLE beads VALIDATE CONSTRAINT beads_type_check;

CREATE TYPE bead_status AS ENUM (
    'open', 'in_progress', 'in_review', 'closed', 'failed'
);
ALTER TABLE beads DROP CONSTRAINT beads_status_check,
    ADD CONSTRAINT beads_status_check CHECK (status::bead_status IS NOT NULL) NOT VALID;
ALTER TABLE beads VALIDATE CONSTRAINT beads_status_check;

CREATE TYPE bead_priority AS ENUM (
    'low', 'medium', 'high', 'critical'
);
ALTER TABLE beads DROP CONSTRAINT beads_priority_check,
    ADD CONSTRAINT beads_priority_check CHECK (priority::bead_priority IS NOT NULL) NOT VALID;
ALTER TABLE beads VALIDATE CONSTRAINT beads_priority_check;

CREATE TYPE agent_role AS ENUM (
    'polecat', 'refinery', 'mayor', 'witness'
);
ALTER TABLE agents DROP CONSTRAINT agents_role_check,
    ADD CONSTRAINT agents_role_check CHECK (role::agent_role IS NOT NULL) NOT VALID;
ALTER TABLE agents VALIDATE CONSTRAINT agents_role_check;

CREATE TYPE agent_status AS ENUM (
    'idle', 'working', 'waiting', 'stalled', 'dead'
);
ALTER TABLE agents DROP CONSTRAINT agents_status_check,
    ADD CONSTRAINT agents_status_check CHECK (status::agent_status IS NOT NULL) NOT VALID;
ALTER TABLE agents VALIDATE CONSTRAINT agents_status_check;

CREATE TYPE nudge_mode AS ENUM (
    'wait-idle', 'immediate', 'queue'
);
ALTER TABLE agent_nudges DROP CONSTRAINT agent_nudges_mode_check,
    ADD CONSTRAINT agent_nudges_mode_check CHECK (mode::nudge_mode IS NOT NULL) NOT VALID;
ALTER TABLE agent_nudges VALIDATE CONSTRAINT agent_nudges_mode_check;

CREATE TYPE nudge_priority AS ENUM (
    'normal', 'urgent'
);
ALTER TABLE agent_nudges DROP CONSTRAINT agent_nudges_priority_check,
    ADD CONSTRAINT agent_nudges_priority_check CHECK (priority::nudge_priority IS NOT NULL) NOT VALID;
ALTER TABLE agent_nudges VALIDATE CONSTRAINT agent_nudges_priority_check;

-- +goose Down
ALTER TABLE agent_nudges DROP CONSTRAINT agent_nudges_priority_check,
    ADD CONSTRAINT agent_nudges_priority_check CHECK (priority IN (
        'normal', 'urgent'
    ));
DROP TYPE nudge_priority;

ALTER TABLE agent_nudges DROP CONSTRAINT agent_nudges_mode_check,
    ADD CONSTRAINT agent_nudges_mode_check CHECK (mode IN (
        'wait-idle', 'immediate', 'queue'
    ));
DROP TYPE nudge_mode;

ALTER TABLE agents DROP CONSTRAINT agents_status_check,
    ADD CONSTRAINT agents_status_check CHECK (status IN (
        'idle', 'working', 'waiting', 'stalled', 'dead'
    ));
DROP TYPE agent_status;

ALTER TABLE agents DROP CONSTRAINT agents_role_check,
    ADD CONSTRAINT agents_role_check CHECK (role IN (
        'polecat', 'refinery', 'mayor', 'witness'
    ));
DROP TYPE agent_role;

ALTER TABLE beads DROP CONSTRAINT beads_priority_check,
    ADD CONSTRAINT beads_priority_check CHECK (priority IN (
        'low', 'medium', 'high', 'critical'
    ));
DROP TYPE bead_priority;

ALTER TABLE beads DROP CONSTRAINT beads_status_check,
    ADD CONSTRAINT beads_status_check CHECK (status IN (
        'open', 'in_progress', 'in_review', 'closed', 'failed'
    ));
DROP TYPE bead_status;

ALTER TABLE beads DROP CONSTRAINT beads_type_check,
    ADD CONSTRAINT beads_type_check CHECK (type IN (
        'issue', 'message', 'escalation', 'merge_request', 'convoy', 'molecule', 'agent'
    ));
DROP TYPE bead_type;

ALTER TABLE bead_events DROP CONSTRAINT bead_events_event_type_check,
    ADD CONSTRAINT bead_events_event_type_check CHECK (event_type IN (
        'created', 'assigned', 'hooked', 'unhooked', 'status_changed', 'closed',
        'escalated', 'notification_failed', 'mail_sent', 'review_submitted',
        'review_completed', 'agent_spawned', 'agent_exited', 'pr_created',
        'pr_creation_failed', 'agent_status', 'triage_resolved', 'fields_updated',
        'review_queue_depth_alert', 'escalation_rate_spike', 'agent_restart_loop',
        'rework_requested', 'babysit_started'
    ));
DROP TYPE bead_event_type;

ALTER TABLE town_events DROP CONSTRAINT town_events_state_check,
    ADD CONSTRAINT town_events_state_check CHECK (state IN (
        'pending', 'processed', 'dead'
    ));
DROP TYPE town_event_state;

ALTER TABLE town_events DROP CONSTRAINT town_events_event_type_check,
    ADD CONSTRAINT town_events_event_type_check CHECK (event_type IN (
        'agent_done', 'agent_completed', 'container_status', 'container_eviction',
        'pr_status_changed', 'bead_created', 'bead_cancelled', 'convoy_started',
        'nudge_timeout', 'pr_feedback_detected', 'pr_auto_merge', 'pr_conflict_detected',
        'bead_status_changed', 'bead_updated', 'bead_deleted', 'convoy_created',
        'rig_created', 'rig_updated', 'rig_deleted', 'town_config_updated',
        'agent_registered', 'agent_deleted', 'agent_reset', 'mail_sent', 'nudge_requested',
        'escalation_acknowledged', 'container_ready', 'triage_resolved',
        'agent_dispatched', 'agent_dispatch_failed', 'agent_stopped', 'nudge_delivered',
        'nudge_delivery_failed', 'mail_delivered', 'mail_delivery_failed', 'pr_polled',
        'pr_poll_failed', 'pr_merge_failed'
    ));
DROP TYPE town_event_type;
