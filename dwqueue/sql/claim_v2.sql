-- dwqueue_claim, version 2: replaces version 1 in migration 0007 (it walks again past the
-- backends it found full). Frozen: a change is a new file loaded by a new revision.
CREATE OR REPLACE FUNCTION dwqueue_claim(
    p_owner text,
    p_n integer,
    p_now timestamptz,
    p_expires timestamptz,
    p_backends text[],
    p_limits integer[],
    p_default_limit integer
) RETURNS SETOF download_jobs
LANGUAGE plpgsql VOLATILE
AS $$
#variable_conflict use_variable
DECLARE
    window_rows integer := 3 * greatest(2 * p_n, p_n + 8);
    due refcursor;
    job_id text;
    backend_name text;
    seen integer;
    leased integer := 0;
    locked_any boolean := false;
    waited boolean := false;
    grew boolean;
    full_backends text[] := '{}';
    job download_jobs;
BEGIN
    IF p_n < 1 THEN
        RETURN;
    END IF;
    LOOP
        seen := 0;
        grew := false;
        OPEN due NO SCROLL FOR
            SELECT d.id, d.backend FROM download_jobs AS d
            WHERE d.state = 'queued' AND d.next_attempt_at <= p_now
              AND NOT (d.backend = ANY(full_backends))
            ORDER BY d.next_attempt_at, d.id
            FOR UPDATE SKIP LOCKED;
        WHILE seen < window_rows LOOP
            FETCH due INTO job_id, backend_name;
            EXIT WHEN NOT FOUND;
            seen := seen + 1;
            CONTINUE WHEN backend_name = ANY(full_backends);
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(1819110755, hashtext(backend_name));
            locked_any := true;
            UPDATE download_jobs AS j SET
                state = 'running', attempts = j.attempts + 1, lease_owner = p_owner,
                lease_expires_at = p_expires, error = NULL, error_class = NULL,
                started_at = p_now, updated_at = p_now, seq = j.seq + 1
            WHERE j.id = job_id AND j.state = 'queued' AND (
                SELECT count(*) FROM download_jobs AS r
                WHERE r.state = 'running' AND r.backend = backend_name
            ) < coalesce(p_limits[array_position(p_backends, backend_name)], p_default_limit)
            RETURNING j.* INTO job;
            IF FOUND THEN
                RETURN NEXT job;
                leased := leased + 1;
                EXIT WHEN leased = p_n;
            ELSE
                full_backends := full_backends || backend_name;
                grew := true;
            END IF;
        END LOOP;
        CLOSE due;
        EXIT WHEN leased = p_n;
        -- The window was spent on backends found full: walk again past their jobs. Each such
        -- pass adds a backend to the list, so there are at most as many as backends.
        CONTINUE WHEN grew AND seen = window_rows;
        EXIT WHEN locked_any OR waited;
        -- Every due job's backend was another claimer's (or nothing is due): wait once for
        -- the lock of the oldest due job's backend, holding no advisory lock of our own.
        SELECT d.backend INTO backend_name FROM download_jobs AS d
        WHERE d.state = 'queued' AND d.next_attempt_at <= p_now
          AND NOT (d.backend = ANY(full_backends))
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        PERFORM pg_advisory_xact_lock(1819110755, hashtext(backend_name));
        waited := true;
    END LOOP;
END;
$$
