-- one row per batch and top-level metadata key: the tag a batch carries. Scalar values as
-- text, nested values as JSON text; a JSON null is no tag.
create or replace view int_batch_tags as
select
    b.batch_id,
    t.key as tag_key,
    case
        when t.type in ('OBJECT', 'ARRAY') then t.value::varchar
        else t.value ->> '$'
    end as tag_value
from stg_batches as b,
    json_each(b.metadata) as t
where json_type(b.metadata) = 'OBJECT'
  and t.type <> 'NULL'
