-- spend and request counts per UTC day, provider, model and request status, from the
-- request rows alone (batches that have them). Failed requests cost what the gateway
-- billed for them (usually 0): this is where waste shows. Dated by the batch's charge
-- date (stg_batches.charged_at), of billed batches only.
create or replace view spend_by_request_status as
with requests as (
    select
        (b.charged_at at time zone 'UTC')::date as day,
        b.provider,
        r.model,
        coalesce(r.request_status, 'unknown') as request_status,
        r.batch_id,
        r.response_status,
        r.cost_nanos
    from stg_batch_requests as r
    inner join stg_batches as b on b.batch_id = r.batch_id
    where b.is_billed
)

select
    day,
    provider,
    model,
    request_status,
    count(distinct batch_id) as batches,
    count(*) as requests,
    count(*) filter (where response_status >= 400) as error_responses,
    coalesce(sum(cost_nanos), 0)::hugeint as cost_nanos,
    nanos_to_usd(coalesce(sum(cost_nanos), 0)) as cost_usd
from requests
group by day, provider, model, request_status
order by day, provider, model, request_status
