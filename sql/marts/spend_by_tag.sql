-- spend per UTC day, tag key, tag value and provider, as billed (by charge date; a
-- restatement's difference on the day it was restated). The keys are the config file's
-- attribution.tags (when it names none: the 20 metadata keys most batches carry, so a
-- flood of keys cannot multiply every batch by thousands); a batch without a key counts
-- under '(untagged)', so each key's rows sum exactly to the bill.
create or replace view spend_by_tag as
with chosen as (
    select tag_key from attribution_keys
),

metadata_keys as (
    -- the keys alone (json_keys): cheaper than reading every tag's value twice
    select unnest(list_distinct(json_keys(metadata))) as tag_key
    from stg_batches
    where json_type(metadata) = 'OBJECT'
),

common_keys as (
    select tag_key
    from metadata_keys
    group by tag_key
    order by count(*) desc, tag_key
    limit 20
),

tag_keys as (
    select tag_key from chosen
    union
    select tag_key from common_keys
    where not exists (select 1 from chosen)
),

billed as (
    select
        batch_id,
        provider,
        (charged_at at time zone 'UTC')::date as day,
        sum(charge_nanos) as cost_nanos
    from int_billed_charges
    group by all
),

tagged as (
    select
        b.day,
        k.tag_key,
        coalesce(t.tag_value, '(untagged)') as tag_value,
        b.provider,
        b.batch_id,
        b.cost_nanos
    from billed as b
    cross join tag_keys as k
    left join int_batch_tags as t on t.batch_id = b.batch_id and t.tag_key = k.tag_key
)

select
    day,
    tag_key,
    tag_value,
    provider,
    count(*) as batches,
    sum(cost_nanos)::hugeint as cost_nanos,
    nanos_to_usd(sum(cost_nanos)) as cost_usd
from tagged
group by day, tag_key, tag_value, provider
