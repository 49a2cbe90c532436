"""Realistic setCustomer records, pre-encoded into request bodies before any clock starts."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

RECORDS_PER_REQUEST = 1_000

_FAMILY = [
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
]
_MIDDLE = ["Văn", "Thị", "Minh", "Hữu", "Đức", "Thanh", "Ngọc", "Quốc", "Anh", "Thu"]
_GIVEN = [
    "An",
    "Bình",
    "Cường",
    "Dũng",
    "Hà",
    "Hải",
    "Hạnh",
    "Hùng",
    "Lan",
    "Linh",
    "Long",
    "Mai",
    "Nam",
    "Phong",
    "Phúc",
    "Quân",
    "Sơn",
    "Tâm",
    "Thảo",
    "Trang",
    "Tuấn",
    "Vy",
    "Yến",
]
_COMPANY_KIND = ["Công ty TNHH", "Công ty Cổ phần", "Doanh nghiệp tư nhân", "Cửa hàng", "Hộ kinh doanh"]
_TRADE = [
    "Thương mại",
    "Dịch vụ",
    "Xây dựng",
    "Vận tải",
    "Thực phẩm",
    "Dược phẩm",
    "Điện máy",
    "Nội thất",
    "Xuất nhập khẩu",
    "Công nghệ",
]
_BRAND = [
    "Minh Anh",
    "Phú Thịnh",
    "Hoàng Long",
    "Sao Việt",
    "Đại Phát",
    "Thành Công",
    "An Khang",
    "Tân Tiến",
    "Hưng Thịnh",
    "Bình Minh",
    "Kim Ngân",
    "Vạn Xuân",
]
_STREET = [
    "Nguyễn Trãi",
    "Lê Lợi",
    "Trần Hưng Đạo",
    "Hai Bà Trưng",
    "Lý Thường Kiệt",
    "Điện Biên Phủ",
    "Cách Mạng Tháng Tám",
    "Nguyễn Văn Cừ",
    "Phạm Văn Đồng",
    "Võ Văn Kiệt",
]
_DISTRICT = [
    "Quận 1",
    "Quận 3",
    "Quận 5",
    "Quận 7",
    "Quận Bình Thạnh",
    "Quận Cầu Giấy",
    "Quận Đống Đa",
    "Quận Hải Châu",
    "Huyện Thanh Trì",
    "TP. Thủ Đức",
]
_CITY = ["TP. Hồ Chí Minh", "Hà Nội", "Đà Nẵng", "Hải Phòng", "Cần Thơ", "Bình Dương", "Đồng Nai"]
_BANK = [
    "Vietcombank",
    "VietinBank",
    "BIDV",
    "Agribank",
    "Techcombank",
    "MB Bank",
    "ACB",
    "VPBank",
    "Sacombank",
]
_MAIL = ["gmail.com", "yahoo.com.vn", "outlook.com", "fpt.vn", "vnpt.vn"]
_ASCII = str.maketrans(
    "àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ",
    "aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyd",
)


def _phone(rng: random.Random) -> str:
    return f"09{rng.randint(0, 9)} {rng.randint(0, 999):03d} {rng.randint(0, 999):03d}"


def customer(code: str, rng: random.Random) -> dict:
    person = f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"
    company = rng.random() < 0.7
    name = f"{rng.choice(_COMPANY_KIND)} {rng.choice(_TRADE)} {rng.choice(_BRAND)}" if company else person
    slug = person.lower().translate(_ASCII).replace(" ", ".")
    bank = rng.random() < 0.6
    return {
        "CustomerCode": code,
        "CustomerName": name,
        "OtherName": name.translate(_ASCII) if company else None,
        "SaleCode": f"NV{rng.randint(1, 60):03d}",
        "Address": f"{rng.randint(1, 999)} {rng.choice(_STREET)}, Phường {rng.randint(1, 20)}, "
        f"{rng.choice(_DISTRICT)}, {rng.choice(_CITY)}",
        "Partner": person if company else None,
        "GroupCode1": rng.choice(["KHL", "KHS", "DAILY", "NPP"]),
        "GroupCode2": f"KV{rng.randint(1, 9):02d}",
        "GroupCode3": rng.choice([None, "VIP", "THUONG"]),
        "PhoneNumber": _phone(rng),
        "TaxCode": f"{rng.randint(100_000_000, 999_999_999)}{rng.randint(0, 9)}" if company else None,
        "Fax": f"028 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}" if rng.random() < 0.2 else None,
        "Email": f"{slug}{rng.randint(1, 999)}@{rng.choice(_MAIL)}",
        "BankAccount": f"{rng.randint(10**11, 10**12 - 1)}" if bank else None,
        "BankName": rng.choice(_BANK) if bank else None,
        "BranchName": f"Chi nhánh {rng.choice(_CITY)}" if bank else None,
        "AccountName": name.upper().translate(_ASCII) if bank else None,
        "PaymentTerm": rng.choice(["0", "15", "30", "45", "60"]),
        "Status": "1" if rng.random() < 0.95 else "0",
        "SuplierYN": 1 if rng.random() < 0.1 else 0,
        "EmployeeYN": 0,
        "Description": "Khách hàng đồng bộ từ hệ thống bán hàng" if rng.random() < 0.3 else None,
    }


@dataclass
class Workload:
    """Request bodies for one key range: the inserts and the same keys with PhoneNumber changed."""

    inserts: list[bytes]
    updates: list[bytes]
    rows: int


def _body(records: list[dict]) -> bytes:
    return msgspec.json.encode({"form": "setCustomer", "data": records})


def batches(prefix: str, requests: int, seed: int, start: int = 0) -> Iterator[list[dict]]:
    """`requests` lists of RECORDS_PER_REQUEST records, keys prefix + zero-padded number, sorted per request."""
    rng = random.Random(seed)
    width = max(6, len(str(start + requests * RECORDS_PER_REQUEST)))
    for r in range(requests):
        base = start + r * RECORDS_PER_REQUEST
        yield [customer(f"{prefix}{base + i:0{width}d}", rng) for i in range(RECORDS_PER_REQUEST)]


def workload(prefix: str, requests: int, seed: int = 1) -> Workload:
    rng = random.Random(seed + 1)
    inserts, updates = [], []
    for records in batches(prefix, requests, seed):
        inserts.append(_body(records))
        for rec in records:
            rec["PhoneNumber"] = _phone(rng)  # the one field an update changes
        updates.append(_body(records))
    return Workload(inserts, updates, requests * RECORDS_PER_REQUEST)


def bodies(prefix: str, requests: int, seed: int, start: int = 0) -> list[bytes]:
    return [_body(records) for records in batches(prefix, requests, seed, start)]
