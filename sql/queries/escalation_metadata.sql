-- name: EscalationInsert :exec
-- EscalationInsert adds the metadata of an escalation bead.
INSERT INTO escalation_metadata (town_id, bead_id, severity, category)
VALUES (@town_id, @bead_id, @severity, @category);

-- name: EscalationListUnacknowledged :many
-- EscalationListUnacknowledged lists open, unacknowledged escalations below the
-- re-escalation cap, with their beads' creation time.
SELECT e.*, b.created_at AS bead_created_at FROM escalation_metadata e
JOIN beads b ON b.town_id = e.town_id AND b.bead_id = e.bead_id
WHERE e.town_id = @town_id AND NOT e.acknowledged AND e.re_escalation_count < @max_count
  AND b.status NOT IN ('closed', 'failed');

-- name: EscalationBump :exec
-- EscalationBump raises an escalation's severity and counts the re-escalation.
UPDATE escalation_metadata SET severity = @severity, re_escalation_count = re_escalation_count + 1
WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: EscalationAcknowledge :exec
-- EscalationAcknowledge acknowledges an escalation.
UPDATE escalation_metadata SET acknowledged = true, acknowledged_at = @now
WHERE town_id = @town_id AND bead_id = @bead_id AND NOT acknowledged;
