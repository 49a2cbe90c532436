from conftest import Api, assert_envelope


async def test_customer_sync_then_get(api: Api) -> None:
    resp = await api.sync("setCustomer", [{"CustomerCode": "KH001", "CustomerName": "Alpha"}])
    body = assert_envelope(resp)
    assert body["records"] == 1 and body["result"]["inserted"] == 1
    got = assert_envelope(await api.get("getCustomer", Id="KH001"))
    assert got["data"][0]["CustomerName"] == "Alpha"
