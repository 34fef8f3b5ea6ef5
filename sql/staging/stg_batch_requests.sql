-- staging: one row per request of a batch (GET /v1/batches/{id}/requests), renamed and cast.
create or replace view stg_batch_requests as
select
    batch_id,
    request_id,
    custom_id,
    request_index,
    provider,
    coalesce(model, 'unknown') as model,
    status as request_status,
    response_status,
    cost_nanos,
    input_tokens,
    output_tokens,
    total_tokens,
    error,
    created_at,
    completed_at
from batch_requests
